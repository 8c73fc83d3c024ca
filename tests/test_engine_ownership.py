"""The engine is single-threaded by design: it belongs to one thread, a call from another
thread is refused at once, ownership moves only by ``take_ownership()``, and the server's
engine client drives it from its own thread with typed operations."""
from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from paddlellm.engine import EngineThreadError, LLMEngine, SamplingParams
from paddlellm.serving import AsyncEngine, EngineDeadError
from paddlellm.serving.async_engine import AbortRequest, AddRequest

GREEDY = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def base():
    return LLMEngine.from_pretrained(None, block_size=4, num_blocks=32)  # the demo model


@pytest.fixture
def engine(base):
    return LLMEngine(base.model, base.tokenizer, base.config)


def in_thread(fn):
    """Run ``fn`` in a new thread; its result, or the exception it raised."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    t = threading.Thread(target=target, name="intruder")
    t.start()
    t.join(60)
    return box["value"]


def test_a_second_thread_is_refused(engine):
    for call in (lambda: engine.add_request("x", [5, 6, 7], GREEDY), engine.step,
                 engine.has_unfinished_requests, lambda: engine.abort_request("x"),
                 lambda: engine.generate([[5, 6]], GREEDY)):
        err = in_thread(call)
        assert isinstance(err, EngineThreadError), err
        assert "owned by thread 'MainThread'" in str(err) and "from thread 'intruder'" in str(err)
    assert not engine.has_unfinished_requests()  # nothing slipped in
    assert in_thread(engine.stats)["requests_added"] == 0  # monitoring reads are allowed
    assert engine.generate([[5, 6, 7]], GREEDY)[0]["finish_reason"] == "length"  # the owner may


def test_take_ownership_moves_the_engine_and_gives_it_back(engine):
    inside = threading.Event()
    release = threading.Event()
    result = {}

    def worker():
        with engine.take_ownership():
            result["out"] = engine.generate([[5, 6, 7]], GREEDY)
            inside.set()
            release.wait(30)

    t = threading.Thread(target=worker, name="owner")
    t.start()
    assert inside.wait(60)
    with pytest.raises(EngineThreadError, match="owned by thread 'owner'"):
        engine.step()  # the main thread lost it for the block
    err = in_thread(lambda: engine.take_ownership().__enter__())
    assert isinstance(err, EngineThreadError) and "claimed" in str(err)  # no third driver
    release.set()
    t.join(30)
    assert result["out"][0]["finish_reason"] == "length"
    assert engine.step() == []  # given back to the main thread


def test_the_engine_client_owns_its_engine_and_sends_typed_ops(engine):
    client = AsyncEngine(engine, max_queue=4)
    client.start()
    try:
        with pytest.raises(EngineThreadError, match="owned by thread 'paddlellm-engine'"):
            engine.add_request("direct", [5, 6, 7], GREEDY)
        second = AsyncEngine(engine)
        with pytest.raises(EngineDeadError, match="owned by thread 'paddlellm-engine'"):
            second.start()  # two clients cannot drive one engine

        async def run():
            return [out async for out in client.generate("r", [5, 6, 7], GREEDY)]

        outs = asyncio.run(run())
        assert sum(len(o.new_token_ids) for o in outs) == 3 and outs[-1].finished
    finally:
        client.stop()
    assert engine.stats()["requests_finished"] >= 1
    assert engine.has_unfinished_requests() is False  # the main thread owns it again
    op = AddRequest("a", (1, 2), GREEDY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.request_id = "b"
    assert AbortRequest("a") == AbortRequest("a")
