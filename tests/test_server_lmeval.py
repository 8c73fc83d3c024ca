"""What lm-evaluation-harness's ``local-completions`` model needs of ``/v1/completions``:
``echo`` with ``logprobs`` (prompt-token log-probabilities, the first one null), ``max_tokens: 0``
(the prompt only), batches of prompts as strings or token-id lists, and the greedy check it
derives from ``top_logprobs`` -- against log_softmax of the model's own logits."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from server_testing import ServerThread, demo_app

PROMPTS = ["The cat sat on the mat. The cat", "Sort: 7 9 1\n1 7"]


@pytest.fixture(scope="module")
def server():
    app = demo_app()
    with ServerThread(app) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            yield app.state.server, http


def reference_logprobs(state, ids: list[int]) -> np.ndarray:
    """log_softmax (float64) of the model's logits ``(L, V)`` over ``ids``, computed directly."""
    import paddle

    model = state.engine.engine.model
    with paddle.no_grad():
        logits = model(paddle.to_tensor([ids])).astype("float32").numpy()[0].astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))


def check_prompt_logprobs(state, ids: list[int], lp: dict, top: int) -> None:
    ref = reference_logprobs(state, ids)
    n = len(ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["tokens"][:n] == [state.tokenizer.decode([t]) for t in ids]
    got = np.array(lp["token_logprobs"][1:n], dtype=np.float64)
    want = ref[np.arange(n - 1), ids[1:]]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    for i in range(1, n):
        tops = lp["top_logprobs"][i]
        assert len(tops) == top
        best = np.sort(ref[i - 1])[::-1][:top]
        np.testing.assert_allclose(sorted(tops.values(), reverse=True), best, atol=1e-5, rtol=0)
        # lm-eval's greedy test: the token's logprob equals the best one exactly
        greedy = lp["token_logprobs"][i] == max(tops.values())
        assert greedy == (int(np.argmax(ref[i - 1])) == ids[i])
    offsets = lp["text_offset"][:n]
    assert offsets[0] == 0 and all(b - a == len(t) for a, b, t in zip(offsets, offsets[1:], lp["tokens"]))


def test_echo_max_tokens_0_batch_equals_log_softmax(server):
    state, http = server
    ids = [state.tokenizer.encode(p) for p in PROMPTS]
    for prompt in (PROMPTS, ids):  # strings, then token-id lists
        r = http.post("/v1/completions", json={"prompt": prompt, "echo": True, "max_tokens": 0,
                                               "logprobs": 2, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [c["index"] for c in body["choices"]] == [0, 1]
        for choice, p, pids in zip(body["choices"], PROMPTS, ids):
            assert choice["finish_reason"] == "length"
            assert choice["text"] == (p if isinstance(prompt[0], str) else state.tokenizer.decode(pids))
            assert len(choice["logprobs"]["tokens"]) == len(pids)
            check_prompt_logprobs(state, pids, choice["logprobs"], 2)
        n = sum(len(p) for p in ids)
        assert body["usage"] == {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n}


def test_lm_eval_loglikelihood_shape_and_greedy_flag(server):
    """lm-eval (>=0.4.3) sends ``max_tokens: 1`` with ``echo`` and reads
    ``token_logprobs[ctxlen:-1]``: the continuation's logprobs, greedy when each equals the best
    of ``top_logprobs``. One continuation is the model's own greedy one, the other is not."""
    state, http = server
    context = state.tokenizer.encode("Sort: 7 9 1\n1")
    ref = reference_logprobs(state, context)
    best = int(np.argmax(ref[-1]))
    worst = int(np.argmin(ref[-1]))
    requests = [context + [best], context + [worst]]
    r = http.post("/v1/completions", json={"prompt": requests, "echo": True, "max_tokens": 1,
                                           "logprobs": 1, "temperature": 0, "seed": 1234})
    assert r.status_code == 200, r.text
    body = r.json()
    results = []
    for choice, ids in zip(body["choices"], requests):
        lp = choice["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then the generated token
        check_prompt_logprobs(state, ids, lp, 1)
        assert lp["text_offset"][len(ids)] == len(state.tokenizer.decode(ids))
        conts = lp["token_logprobs"][len(context):-1]
        tops = lp["top_logprobs"][len(context):-1]
        results.append((sum(conts), all(t == max(top.values()) for t, top in zip(conts, tops))))
    assert results[0][1] is True and results[1][1] is False
    np.testing.assert_allclose([x for x, _ in results], [ref[-1][best], ref[-1][worst]], atol=1e-5)
    assert body["usage"]["prompt_tokens"] == 2 * (len(context) + 1)
    assert body["usage"]["completion_tokens"] == 2


def test_echo_logprobs_stream_and_n(server):
    state, http = server
    ids = state.tokenizer.encode(PROMPTS[0])
    with http.stream("POST", "/v1/completions",
                     json={"prompt": PROMPTS[0], "echo": True, "max_tokens": 0, "logprobs": 1,
                           "stream": True, "stream_options": {"include_usage": True}}) as r:
        lines = [json.loads(line[6:]) for line in r.iter_lines()
                 if line.startswith("data: ") and line != "data: [DONE]"]
    assert lines[0]["choices"][0]["text"] == PROMPTS[0]
    assert lines[0]["choices"][0]["finish_reason"] == "length"
    check_prompt_logprobs(state, ids, lines[0]["choices"][0]["logprobs"], 1)
    assert lines[-1]["usage"]["prompt_tokens"] == len(ids)
    with http.stream("POST", "/v1/completions",
                     json={"prompt": PROMPTS[0], "echo": True, "max_tokens": 3, "logprobs": 1,
                           "temperature": 0, "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    first = chunks[0]["choices"][0]
    assert first["text"] == PROMPTS[0]
    check_prompt_logprobs(state, ids, first["logprobs"], 1)
    generated = [t for c in chunks[1:] for t in c["choices"][0]["logprobs"]["token_logprobs"]]
    assert len(generated) == 3 and None not in generated
    r = http.post("/v1/completions", json={"prompt": PROMPTS[1], "echo": True, "max_tokens": 0,
                                           "logprobs": 0, "n": 2}).json()
    assert len(r["choices"]) == 2 and r["choices"][0]["logprobs"] == r["choices"][1]["logprobs"]
    assert r["usage"]["prompt_tokens"] == len(state.tokenizer.encode(PROMPTS[1]))


@pytest.mark.parametrize("body,param,words", [
    ({"prompt": "a", "max_tokens": 0}, "max_tokens", "needs echo"),
    ({"prompt": "a", "max_tokens": -1}, "max_tokens", "max_tokens"),
    ({"prompt": "a", "echo": True, "max_tokens": 0, "logprobs": 6}, "logprobs", "logprobs"),
])
def test_errors_are_400_naming_the_field(server, body, param, words):
    _, http = server
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error
