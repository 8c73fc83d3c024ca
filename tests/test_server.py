"""The HTTP layer against a fake engine (no Paddle): OpenAI shapes, streaming, errors, API
key, full queue, client disconnect, metrics. Real-engine tests: test_server_openai.py."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from paddlellm.serving import AsyncEngine, build_app
from paddlellm.serving.metrics import parse_prometheus
from server_testing import FakeEngine, ServerThread

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


def make_server(engine: FakeEngine | None = None, **kwargs):
    engine = engine or FakeEngine()
    client = AsyncEngine(engine, max_queue=kwargs.pop("max_queue", 8))
    app = build_app(client, model_name="fake-model", **kwargs)
    return engine, ServerThread(app)


@pytest.fixture(scope="module")
def served():
    engine, thread = make_server()
    with thread as url, httpx.Client(base_url=url, timeout=30) as http:
        yield engine, http


def expected_text(engine: FakeEngine, prompt_ids: list[int], n: int, seed: int = 0) -> str:
    return "".join(engine.tokenizer.decode([(sum(prompt_ids) + seed + k) % 26 + 64]) for k in range(n))


def sse_events(text: str) -> list:
    events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_chat_completion_shape_usage_and_logprobs(served):
    engine, http = served
    ids = engine.tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)
    r = http.post(CHAT, json={"model": "fake-model", "messages": HELLO, "max_tokens": 5,
                              "logprobs": True, "top_logprobs": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "fake-model"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected_text(engine, ids, 5)}
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 5, "total_tokens": len(ids) + 5}
    content = choice["logprobs"]["content"]
    assert "".join(c["token"] for c in content) == choice["message"]["content"]
    assert [len(c["top_logprobs"]) for c in content] == [2] * 5
    assert content[0]["logprob"] == -0.5 and content[0]["bytes"] == list(content[0]["token"].encode())


def test_n_choices_use_seed_plus_index(served):
    engine, http = served
    ids = engine.tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)
    body = http.post(CHAT, json={"messages": HELLO, "max_completion_tokens": 3, "n": 3,
                                 "seed": 7}).json()
    texts = [c["message"]["content"] for c in body["choices"]]
    assert texts == [expected_text(engine, ids, 3, seed=7 + i) for i in range(3)]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["prompt_tokens"] == len(ids)  # counted once for n choices
    assert body["usage"]["completion_tokens"] == 9


def test_completions_batch_echo_and_logprobs(served):
    engine, http = served
    r = http.post("/v1/completions", json={"prompt": ["ab", "xyz"], "max_tokens": 4, "echo": True})
    body = r.json()
    assert body["object"] == "text_completion"
    for choice, prompt in zip(body["choices"], ["ab", "xyz"]):
        assert choice["text"] == prompt + expected_text(engine, engine.tokenizer.encode(prompt), 4)
    r = http.post("/v1/completions", json={"prompt": [70, 71], "max_tokens": 3, "logprobs": 1})
    lp = r.json()["choices"][0]["logprobs"]
    assert lp["text_offset"] == [0, 1, 2] and lp["token_logprobs"] == [-0.5] * 3
    assert [list(t) for t in lp["top_logprobs"]] == [[tok] for tok in lp["tokens"]]


def test_streaming_chat_equals_non_streaming_with_usage(served):
    engine, http = served
    req = {"messages": HELLO, "max_tokens": 6, "n": 2, "seed": 1}
    full = http.post(CHAT, json=req).json()
    r = http.post(CHAT, json={**req, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = sse_events(r.text)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant", "content": ""}] * 2
    texts = {0: "", 1: ""}
    for c in chunks[:-1]:
        assert c["usage"] is None
        texts[c["choices"][0]["index"]] += c["choices"][0]["delta"].get("content", "")
    assert [texts[0], texts[1]] == [c["message"]["content"] for c in full["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full["usage"]
    finals = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finals == ["length", "length"]


def test_streaming_completions_text_concatenates(served):
    engine, http = served
    r = http.post("/v1/completions", json={"prompt": "ab", "max_tokens": 5, "stream": True})
    chunks = sse_events(r.text)
    assert "usage" not in chunks[0]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected_text(engine, engine.tokenizer.encode("ab"), 5)


LONG = [{"role": "user", "content": "word " * 200}]
DEEP: list = [1]
for _ in range(40):
    DEEP = [DEEP]
BAD_REQUESTS = [
    # (body, status, words in the message, param)
    (b"{not json", 400, "Invalid JSON body", None),
    (b"[1, 2]", 400, "must be a JSON object", None),
    ({"model": "fake-model"}, 400, "messages: Field required", "messages"),
    ({"messages": []}, 400, "at least 1 item", "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role", "messages.0.role"),
    ({"messages": HELLO, "temperature": "hot"}, 400, "temperature", "temperature"),
    ({"messages": HELLO, "temperature": 3}, 400, "temperature", "temperature"),
    ({"messages": HELLO, "n": 0}, 400, "n: Input should be greater than or equal to 1", "n"),
    ({"messages": HELLO, "top_p": 0}, 400, "top_p", "top_p"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4 stop", "stop"),
    ({"messages": HELLO, "model": "gpt-4"}, 404, "The model `gpt-4` does not exist", "model"),
    ({"messages": LONG}, 400, "maximum context length is 128 tokens", "messages"),
    ({"messages": HELLO, "max_tokens": 500}, 400, "maximum context length is 128 tokens", "max_tokens"),
    ({"messages": HELLO, "frequency_penalty": 0.5}, 400, "not supported", "frequency_penalty"),
    ({"messages": HELLO, "stream_options": {"include_usage": True}}, 400, "only allowed when stream", "stream_options"),
    ({"messages": HELLO, "top_logprobs": 2}, 400, "requires logprobs", "top_logprobs"),
    ({"messages": HELLO, "tools": [{"type": "function"}]}, 400, "tools is not supported", "tools"),
    # strict types, as OpenAI: no coercion of booleans, strings or non-finite numbers
    ({"messages": HELLO, "max_tokens": True}, 400, "max_tokens", "max_tokens"),
    ({"messages": HELLO, "stream": "yes"}, 400, "stream", "stream"),
    ({"messages": HELLO, "logprobs": "yes"}, 400, "logprobs", "logprobs"),
    ({"messages": HELLO, "temperature": "1"}, 400, "temperature", "temperature"),
    ({"messages": HELLO, "top_k": 2**70}, 400, "top_k", "top_k"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "repetition_penalty": Infinity}', 400,
     "finite number", "repetition_penalty"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400,
     "finite number", "temperature"),
    # known OpenAI fields we do not implement: named, never ignored
    ({"messages": HELLO, "response_format": {"type": "json_object"}}, 400, "response_format is not supported", "response_format"),
    ({"messages": HELLO, "functions": [{"name": "f"}]}, 400, "functions is not supported", "functions"),
    ({"messages": HELLO, "function_call": "auto"}, 400, "function_call is not supported", "function_call"),
    ({"messages": HELLO, "tool_choice": "auto"}, 400, "tool_choice is not supported", "tool_choice"),
    # client errors that used to be 500s
    (b'{"messages": [{"role": "user", "content": "a\\udc80b"}]}', 400, "lone surrogate", "messages.0.content"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply", None),
    ({"messages": HELLO, "metadata": {"a": DEEP}}, 400, "nested deeper than 32 levels",
     "metadata.a" + ".0" * 30),
    # more sequences than the server ever runs (max_num_seqs 4 + max_queue 8): never admitted
    ({"messages": HELLO, "n": 13}, 400, "at most 12 sequences at once", "n"),
    ({"messages": [{"role": "user", "content": "x" * (128 * 32 + 1)}]}, 400, "over the 4096 this server tokenizes", "messages"),
]


@pytest.mark.parametrize("body,status,words,param", BAD_REQUESTS)
def test_bad_chat_requests_answer_openai_errors(served, body, status, words, param):
    _, http = served
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = http.post(CHAT, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"] and error["param"] == param


def test_bad_completions_routes_and_methods_then_server_still_serves(served):
    engine, http = served
    cases = [
        (http.post("/v1/completions", json={"prompt": [5000]}), 400, "out of range"),
        (http.post("/v1/completions", json={"prompt": []}), 400, "must not be empty"),
        (http.post("/v1/completions", json={"prompt": "a", "logprobs": 9}), 400, "logprobs"),
        (http.post("/v1/completions", json={"prompt": "a", "max_tokens": 0}), 400, "needs echo"),
        (http.post("/v1/completions", json={"prompt": 42}), 400, "prompt"),
        (http.post("/v1/completions", json={"prompt": ["a"] * 13}), 400, "at most 12 sequences at once"),
        (http.post("/v1/completions", json={"prompt": "a", "best_of": 3}), 400, "best_of"),
        (http.post("/v1/completions", json={"prompt": "a" * 5000}), 400, "--prompt_chars_per_token"),
        (http.post("/v1/completions", json={"prompt": [70] * 129}), 400, "maximum context length"),
        (http.get("/v1/nothing"), 404, "Not found: GET /v1/nothing"),
        (http.get(CHAT), 405, "Method GET not allowed"),
        (http.post(CHAT, content=b" " * (8 * 1024 * 1024 + 1)), 413, "request body is over"),
        (http.get("/v1/models/other"), 404, "does not exist"),
    ]
    for r, status, words in cases:
        assert r.status_code == status and words in r.json()["error"]["message"], r.text
    for _ in range(20):  # a burst of bad requests, then a good one
        assert http.post(CHAT, content=b"{").status_code == 400
    assert http.post(CHAT, json={"messages": HELLO, "max_tokens": 2}).status_code == 200
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/v1/models").json()["data"][0]["id"] == "fake-model"
    assert http.get("/v1/models/fake-model").json()["max_model_len"] == 128


def test_engine_step_failure_is_a_generic_500_and_serving_continues():
    engine, thread = make_server()
    real_step = engine.step

    def failing_step():
        engine.step = real_step  # fail once
        raise RuntimeError("kernel exploded")

    with thread as url, httpx.Client(base_url=url, timeout=30) as http:
        engine.step = failing_step
        r = http.post(CHAT, json={"messages": HELLO, "max_tokens": 3})
        assert r.status_code == 500, r.text
        error = r.json()["error"]  # logged on the server; no exception text in the answer
        assert error["message"] == "Internal server error; it was logged on the server."
        assert "kernel exploded" not in r.text and "RuntimeError" not in r.text
        assert http.post(CHAT, json={"messages": HELLO, "max_tokens": 3}).status_code == 200
        assert http.get("/health").status_code == 200


def test_api_key_required_on_v1_only():
    _, thread = make_server(api_key="sekrit")
    with thread as url, httpx.Client(base_url=url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"},
                        {"Authorization": b"Bearer sek\xffrit"}, {"Authorization": "Bearer \u00e9".encode()}):
            r = http.post(CHAT, json={"messages": HELLO}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/v1/models").status_code == 401
        ok = http.post(CHAT, json={"messages": HELLO, "max_tokens": 2},
                       headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200
        assert http.get("/health").status_code == 200 and http.get("/").status_code == 200


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_full_queue_answers_503_with_retry_after():
    engine, thread = make_server(FakeEngine(max_num_seqs=1, step_delay=0.01), max_queue=1)
    slow = {"messages": HELLO, "max_tokens": 60, "stream": True}
    with thread as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", CHAT, json=slow) as first, http.stream("POST", CHAT, json=slow) as second:
            assert first.status_code == 200 and second.status_code == 200  # running + queued
            r = http.post(CHAT, json={"messages": HELLO, "max_tokens": 2})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
            first.read(), second.read()
        assert http.post(CHAT, json={"messages": HELLO, "max_tokens": 2, "n": 2}).status_code == 200
        # more than max_num_seqs + max_queue at once can never be admitted: 400, not 503
        r = http.post(CHAT, json={"messages": HELLO, "max_tokens": 2, "n": 3})
        assert r.status_code == 400 and "retry-after" not in r.headers, r.text
        assert r.json()["error"]["code"] == "too_many_sequences"
        assert "--max_num_seqs + --max_queue" in r.json()["error"]["message"]


def test_client_disconnect_mid_stream_aborts_and_frees_blocks():
    engine, thread = make_server(FakeEngine(step_delay=0.01))
    with thread as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", CHAT, json={"messages": HELLO, "max_tokens": 70, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            seen = [next(lines) for _ in range(6)]  # a few events, then hang up
            assert any('"content"' in line for line in seen)
            assert wait_until(lambda: engine.stats()["kv_blocks_used"] > 0)
        assert wait_until(lambda: len(engine.aborted) == 1)
        assert wait_until(lambda: not engine.requests)
        metrics = parse_prometheus(http.get("/metrics").text)
        assert metrics['paddlellm_kv_blocks_used{model_name="fake-model"}'] == 0
        assert metrics['paddlellm_num_requests_in_flight{model_name="fake-model"}'] == 0
        with http.stream("POST", CHAT, json={"messages": HELLO, "max_tokens": 70, "stream": True}) as r:
            assert r.status_code == 200  # hang up before reading any event
        assert wait_until(lambda: len(engine.aborted) == 2)
        assert wait_until(lambda: not engine.requests)


def test_client_disconnect_during_non_streaming_request_aborts_it():
    engine, thread = make_server(FakeEngine(step_delay=0.01))
    with thread as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + CHAT, json={"messages": HELLO, "max_tokens": 70}, timeout=0.3)
        assert wait_until(lambda: len(engine.aborted) == 1)
        assert wait_until(lambda: engine.stats()["kv_blocks_used"] == 0)


def test_metrics_count_requests_and_tokens():
    engine, thread = make_server()
    with thread as url, httpx.Client(base_url=url, timeout=30) as http:
        http.post(CHAT, json={"messages": HELLO, "max_tokens": 4})
        http.post("/v1/completions", json={"prompt": "ab", "max_tokens": 3, "stream": True}).read()
        http.post(CHAT, content=b"{")
        r = http.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        m = parse_prometheus(r.text)
        prompt_len = len(engine.tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)) + 2
        assert m['paddlellm_http_requests_total{code="200",route="/v1/chat/completions"}'] == 1
        assert m['paddlellm_http_requests_total{code="400",route="/v1/chat/completions"}'] == 1
        assert m['paddlellm_http_requests_total{code="200",route="/v1/completions"}'] == 1
        assert m['paddlellm_generation_tokens_total{model_name="fake-model"}'] == 7
        assert m['paddlellm_prompt_tokens_total{model_name="fake-model"}'] == prompt_len
        assert m['paddlellm_kv_blocks_total{model_name="fake-model"}'] == 64
        assert "# TYPE paddlellm_kv_blocks_used gauge" in r.text


def test_tokenize_counts_chat_and_completion_prompts_against_the_context(served):
    engine, http = served
    ids = engine.tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)
    r = http.post("/tokenize", json={"model": "fake-model", "messages": HELLO})
    assert r.status_code == 200, r.text
    assert r.json() == {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids}
    r = http.post("/tokenize", json={"prompt": "hello"})
    assert r.json()["tokens"] == list(engine.tokenizer.encode("hello"))
    for body, words in (({}, "Give messages"), ({"messages": HELLO, "prompt": "x"}, "not both"),
                        ({"messages": HELLO, "model": "other"}, "does not exist")):
        r = http.post("/tokenize", json=body)
        assert r.status_code in (400, 404) and words in r.json()["error"]["message"], r.text


def test_favicon_is_served(served):
    _, http = served
    r = http.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in r.content


def test_request_over_the_kv_cache_is_a_400_naming_the_limit():
    """A sequence longer than the whole KV cache can never run: 400, not 503 or a hang."""
    engine, thread = make_server(FakeEngine(num_blocks=16, block_size=4))  # 64 tokens < 128
    with thread as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.post(CHAT, json={"messages": HELLO, "max_tokens": 40})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "max_tokens" and error["code"] == "context_length_exceeded"
        assert "KV cache holds 64 tokens" in error["message"] and "--num_blocks 16" in error["message"]
        ok = http.post(CHAT, json={"messages": HELLO})  # the default max_tokens fits the cache
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["total_tokens"] == 64
