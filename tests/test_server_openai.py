"""The server on the real engine and the bundled demo model, driven by the official
``openai`` client and plain HTTP on loopback: parity with ``model.generate``, streaming,
logprobs, stops, seeds, errors, a 32-request concurrent load test, disconnects, ``llm serve``."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from paddlellm.serving.metrics import parse_prometheus
from server_testing import ServerThread, demo_app

MODEL = "qwen-demo"
LABEL = '{model_name="qwen-demo"}'


@pytest.fixture(scope="module")
def server():
    app = demo_app()
    with ServerThread(app) as url:
        yield app.state.server, url


@pytest.fixture(scope="module")
def client(server):
    _, url = server
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def greedy_reference(state, ids: list[int], max_new_tokens: int) -> str:
    """``model.generate`` greedy (batch 1) on the server's own weights; run while idle."""
    import paddle

    model, tokenizer = state.engine.engine.model, state.tokenizer
    out = model.generate(paddle.to_tensor([ids]), max_new_tokens=max_new_tokens)
    new = [int(t) for t in out.numpy()[0, len(ids):]]
    eos = model.config.eos_token_id
    if eos in new:
        new = new[: new.index(eos)]
    return tokenizer.decode(new, skip_special_tokens=True)


def metrics(url: str) -> dict[str, float]:
    return parse_prometheus(httpx.get(url + "/metrics", timeout=10).text)


def wait_idle(url: str, timeout: float = 20) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(url)
        if (m[f"paddlellm_kv_blocks_used{LABEL}"] == 0 and m[f"paddlellm_num_requests_in_flight{LABEL}"] == 0) \
                or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


PROMPTS = [f"Sort: {i % 10} {(i * 7) % 10} {(i * 3) % 10}\n" for i in range(24)] + [
    "What colour is the cat?", "Reverse: a b c", "Count: x y z", "Repeat: q w e r",
    "What comes after d?", "Sort: 9 1 5 3\n", "Reverse: k l m n", "What colour is the owl?"]


def test_models_and_health(client, server):
    _, url = server
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    assert httpx.get(url + "/health").json() == {"status": "ok"}


def test_chat_greedy_equals_model_generate_stream_and_not(client, server):
    state, _ = server
    messages = [{"role": "user", "content": "Repeat: q w e r"}]
    ids = state.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    expected = greedy_reference(state, ids, 12)
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == expected
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 12
    assert r.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_completions_greedy_equal_model_generate(client, server):
    state, _ = server
    for prompt in PROMPTS[:3] + ["What colour is the cat?"]:
        expected = greedy_reference(state, state.tokenizer.encode(prompt), 10)
        r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
        assert r.choices[0].text == expected, prompt
        streamed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10,
                                             temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in streamed) == expected


def test_logprobs_stop_seed_and_n(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count: a b"}],
                                       max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:  # greedy picks the most likely token
        assert len(item.top_logprobs) == 3
        assert item.logprob == pytest.approx(max(t.logprob for t in item.top_logprobs), abs=1e-5)
        assert item.top_logprobs[0].token == item.token
    c = client.completions.create(model=MODEL, prompt="Sort: 7 9 1\n", max_tokens=8, temperature=0,
                                  logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 8 and all(len(t) == 2 for t in lp.top_logprobs)
    full = client.completions.create(model=MODEL, prompt="Sort: 7 9 1\n", max_tokens=16, temperature=0)
    assert "0 0 1" in full.choices[0].text
    stopped = client.completions.create(model=MODEL, prompt="Sort: 7 9 1\n", max_tokens=16,
                                        temperature=0, stop=["0 1"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == full.choices[0].text.split("0 1")[0]
    sampled = [client.completions.create(model=MODEL, prompt="Reverse: a b c", max_tokens=10,
                                         temperature=1.0, seed=s, n=2) for s in (3, 3, 4)]
    texts = [[ch.text for ch in r.choices] for r in sampled]
    assert texts[0] == texts[1]  # same seed, same choices
    assert texts[0] != texts[2]


def test_errors_through_the_openai_client(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="maximum context length is 128"):
        client.completions.create(model=MODEL, prompt="a b " * 100, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 128"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=1000)
    ok = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=2)
    assert ok.usage.completion_tokens <= 2


async def _load(url: str, n: int) -> list[str]:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120) as c:
        async def one(i: int) -> str:
            if i % 2:
                stream = await c.completions.create(model=MODEL, prompt=PROMPTS[i], max_tokens=16,
                                                    temperature=0, stream=True)
                return "".join([ch.choices[0].text async for ch in stream])
            stream = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPTS[i]}], max_tokens=16,
                temperature=0, stream=True)
            return "".join([ch.choices[0].delta.content or "" async for ch in stream])

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_32_concurrent_streams_equal_single_requests_and_free_every_block(client, server):
    state, url = server
    n = 32
    single = []
    for i in range(n):  # one at a time
        if i % 2:
            single.append(client.completions.create(model=MODEL, prompt=PROMPTS[i], max_tokens=16,
                                                    temperature=0).choices[0].text)
        else:
            single.append(client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPTS[i]}], max_tokens=16,
                temperature=0).choices[0].message.content)
    before = metrics(url)
    counters = state.engine.engine.stats()
    concurrent = asyncio.run(_load(url, n))
    assert concurrent == single
    after = state.engine.engine.stats()
    tokens = after["generation_tokens"] - counters["generation_tokens"]
    assert after["steps"] - counters["steps"] < tokens / 4  # really batched together
    assert len(set(single)) > 8  # the prompts really differ
    m = wait_idle(url)
    assert m[f"paddlellm_kv_blocks_used{LABEL}"] == 0
    assert m[f"paddlellm_num_requests_running{LABEL}"] == 0
    assert m[f"paddlellm_num_requests_waiting{LABEL}"] == 0
    assert m[f"paddlellm_num_requests_in_flight{LABEL}"] == 0
    served = sum(v - before.get(k, 0) for k, v in m.items()
                 if k.startswith("paddlellm_http_requests_total") and 'code="200"' in k and "/v1/" in k)
    assert served == n


def test_disconnect_mid_stream_frees_the_blocks(server):
    state, url = server
    aborted = state.engine.engine.stats()["requests_aborted"]
    body = {"model": MODEL, "prompt": "Repeat: a b", "max_tokens": 100, "stream": True,
            "ignore_eos": True}
    with httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for _ in range(4):
                next(lines)
            assert metrics(url)[f"paddlellm_kv_blocks_used{LABEL}"] > 0
    m = wait_idle(url)
    assert m[f"paddlellm_kv_blocks_used{LABEL}"] == 0
    assert state.engine.engine.stats()["requests_aborted"] == aborted + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_serve_command_with_api_key():
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "paddlellm", "serve", "--port", str(port),
                             "--api_key", "k123", "--log_level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llm serve did not come up"
            time.sleep(0.2)
        with openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
        with openai.OpenAI(base_url=url + "/v1", api_key="k123", max_retries=0) as good:
            r = good.chat.completions.create(model="qwen-demo-instruct",  # the default model
                                             messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=3)
            assert r.usage.completion_tokens >= 1
        assert "paddlellm chat" in httpx.get(url + "/").text
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
