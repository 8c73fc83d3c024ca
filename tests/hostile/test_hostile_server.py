"""Hostile and clumsy requests against the real server (issue 14, items 2, 4, 6, 7, 8, 11).

The corpus is built here at test time (nothing large is committed). Across it: no response
is a 500, no body carries a Python exception repr or a traceback, every error is in OpenAI's
shape, and the server still answers a valid request after each case. ``/health`` must stay
live (under 1 s, a liveness bound) while a maximal prompt is tokenized and while a chat
template burns its whole time budget; RSS growth after an 8 MB prompt stays bounded.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from paddlellm.serving import AsyncEngine, ServerLimits, build_app
from server_testing import FakeEngine, ServerThread, demo_app

KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "hi"}]
# what a leaked exception looks like: a repr such as ValueError('...'), a traceback, a frame
LEAK = re.compile(r"Traceback|File \"|[A-Z][A-Za-z]*(Error|Exception)\(|<[a-z_.]+ object at 0x")
BODY_TIMEOUT = 1.0


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server():
    """The demo model behind the real HTTP stack, with an API key and a short body timeout."""
    app = demo_app(api_key=KEY, limits=ServerLimits(body_timeout=BODY_TIMEOUT))
    thread = ServerThread(app)
    with thread as url, httpx.Client(base_url=url, timeout=60, headers=AUTH) as http:
        yield thread, http


def raw_exchange(port: int, data: bytes, *, pause_after: bytes = b"", wait: float = 0.0) -> bytes:
    """Send bytes on a fresh connection (optionally stalling), return the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(data)
            if pause_after:
                time.sleep(wait)
                s.sendall(pause_after)
        except (BrokenPipeError, ConnectionResetError):  # the server stopped reading: fine
            pass
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def post_raw(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in (headers or AUTH).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def hostile_corpus() -> list[tuple[str, str, object, set[int]]]:
    """``(name, path, body: dict | bytes, allowed statuses)``."""
    big = "abc " * 2_000_000  # 8 MB, under the 8 MiB body limit
    deep = b"[" * 100_000 + b"]" * 100_000
    cases: list[tuple[str, str, object, set[int]]] = [
        ("8MB completion prompt", COMPLETIONS, {"prompt": big, "max_tokens": 1}, {400}),
        ("8MB chat message", CHAT, {"messages": [{"role": "user", "content": big}]}, {400}),
        ("body over the limit", COMPLETIONS, b'{"prompt": "' + b"a" * (8 * 1024 * 1024) + b'"}', {413}),
        ("100000-deep JSON", CHAT, deep, {400}),
        ("deep JSON in a field", CHAT, json.dumps({"messages": HI, "user": json.loads(b"[" * 500 + b"]" * 500)}).encode(), {400}),
        ("lone surrogate in a message", CHAT, b'{"messages": [{"role": "user", "content": "a\\udc80b"}]}', {400}),
        ("lone surrogate in a prompt", COMPLETIONS, b'{"prompt": "a\\ud800", "max_tokens": 1}', {400}),
        ("lone surrogate in the model", CHAT, b'{"model": "\\udfff", "messages": [{"role": "user", "content": "x"}]}', {400}),
        ("lone surrogate in a key", CHAT, b'{"\\udfff": 1, "messages": [{"role": "user", "content": "x"}]}', {400}),
        ("invalid UTF-8", CHAT, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', {400}),
        ("not JSON", CHAT, b"{\"messages\": ", {400}),
        ("5000-digit integer", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "n": ' + b"9" * 5000 + b"}", {400}),
        ("UTF-16 body", CHAT, json.dumps({"messages": HI}).encode("utf-16"), {200, 400}),
        ("empty body", CHAT, b"", {400}),
        ("null body", CHAT, b"null", {400}),
        ("repetition_penalty Infinity", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "repetition_penalty": Infinity}', {400}),
        ("temperature NaN", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', {400}),
        ("top_p 1e309", COMPLETIONS, b'{"prompt": "x", "top_p": 1e309}', {400}),
        ("top_k 2**70", CHAT, {"messages": HI, "top_k": 2**70}, {400}),
        ("max_tokens true", CHAT, {"messages": HI, "max_tokens": True}, {400}),
        ("max_tokens 2**80", COMPLETIONS, {"prompt": "x", "max_tokens": 2**80}, {400}),
        ("stream 'yes'", CHAT, {"messages": HI, "stream": "yes"}, {400}),
        ("logprobs 'yes'", CHAT, {"messages": HI, "logprobs": "yes"}, {400}),
        ("completion logprobs true", COMPLETIONS, {"prompt": "x", "logprobs": True}, {400}),
        ("seed 2**80", CHAT, {"messages": HI, "seed": 2**80, "max_tokens": 1}, {400}),
        ("stop_token_ids 2**70", CHAT, {"messages": HI, "stop_token_ids": [2**70]}, {400}),
        ("response_format", CHAT, {"messages": HI, "response_format": {"type": "json_object"}}, {400}),
        ("functions", CHAT, {"messages": HI, "functions": [{"name": "f", "parameters": {}}]}, {400}),
        ("function_call", CHAT, {"messages": HI, "function_call": {"name": "f"}}, {400}),
        ("tool_choice", CHAT, {"messages": HI, "tool_choice": "required"}, {400}),
        ("tools", CHAT, {"messages": HI, "tools": [{"type": "function", "function": {"name": "f"}}]}, {400}),
        ("image content part", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, {400}),
        ("1000 prompts (never admitted)", COMPLETIONS, {"prompt": ["x"] * 1000, "max_tokens": 1}, {400}),
        ("token-id prompts x n over the limit", COMPLETIONS, {"prompt": [[5]] * 30, "n": 16, "max_tokens": 1}, {400}),
        ("prompt + max_tokens over the context", COMPLETIONS, {"prompt": "x", "max_tokens": 100_000}, {400}),
        ("token ids out of range", COMPLETIONS, {"prompt": [2**62, -1]}, {400}),
        ("200000 empty messages", CHAT, {"messages": [{"role": "user", "content": ""}] * 200_000}, {400}),
        ("unknown model", CHAT, {"model": "gpt-9", "messages": HI}, {404}),
        ("the 'none' forms of unimplemented fields", CHAT,
         {"messages": HI, "max_tokens": 1, "tools": [], "functions": None, "tool_choice": "none",
          "function_call": "none", "response_format": {"type": "text"}}, {200}),
        ("negative seed", CHAT, {"messages": HI, "seed": -1, "max_tokens": 1}, {200}),
        ("temperature 1e-38", CHAT, {"messages": HI, "temperature": 1e-38, "max_tokens": 6}, {200}),
    ]
    return cases


def check_answer(name: str, status: int, text: str, allowed: set[int]) -> None:
    assert status != 500, f"{name}: 500: {text[:300]}"
    assert status in allowed, f"{name}: {status}: {text[:300]}"
    assert not LEAK.search(text), f"{name}: leaks an exception: {text[:300]}"
    if status >= 400:
        error = json.loads(text)["error"]
        assert set(error) == {"message", "type", "param", "code"}, f"{name}: {text[:300]}"


def assert_serving(http: httpx.Client) -> None:
    r = http.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


def test_corpus_never_500_never_leaks_and_server_keeps_serving(server):
    thread, http = server
    greedy = http.post(CHAT, json={"messages": HI, "temperature": 0, "max_tokens": 6}).json()
    for name, path, body, allowed in hostile_corpus():
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = http.post(path, content=content, headers={"content-type": "application/json"})
        check_answer(name, r.status_code, r.text, allowed)
        if name == "temperature 1e-38":  # the limit of sampling is greedy, never NaN -> token 0
            assert (r.json()["choices"][0]["message"]["content"]
                    == greedy["choices"][0]["message"]["content"])
        assert_serving(http)


def test_errors_name_the_field_or_the_limit(server):
    _, http = server
    expect = [
        ({"messages": HI, "max_tokens": True}, "max_tokens"),
        ({"messages": HI, "stream": "yes"}, "stream"),
        ({"messages": HI, "logprobs": "yes"}, "logprobs"),
        ({"messages": HI, "top_k": 2**70}, "top_k"),
        ({"messages": HI, "response_format": {"type": "json_schema"}}, "response_format"),
        ({"messages": HI, "functions": [{"name": "f"}]}, "functions"),
        ({"messages": HI, "tool_choice": "auto"}, "tool_choice"),
    ]
    for body, field in expect:
        error = http.post(CHAT, json=body).json()["error"]
        assert error["param"] == field and field in error["message"], error
    r = http.post(CHAT, content=b'{"messages": [{"role": "user", "content": "x"}], "repetition_penalty": Infinity}')
    assert r.json()["error"]["param"] == "repetition_penalty"
    error = http.post(COMPLETIONS, json={"prompt": ["x"] * 1000}).json()["error"]
    assert error["code"] == "too_many_sequences" and "--max_num_seqs + --max_queue" in error["message"]
    error = http.post(COMPLETIONS, json={"prompt": "abc " * 2_000_000}).json()["error"]
    assert error["code"] == "context_length_exceeded" and "--prompt_chars_per_token" in error["message"]


def test_8mb_prompt_is_refused_at_once_with_bounded_memory(server):
    _, http = server
    body = json.dumps({"prompt": "abc " * 2_000_000, "max_tokens": 1}).encode()
    before = rss_bytes()
    for _ in range(3):
        r = http.post(COMPLETIONS, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400
    grown = rss_bytes() - before
    # before the fix: +760 MB kept; now the body, its parse and transient copies only
    assert grown < 16 * len(body), f"RSS grew by {grown / 2**20:.0f} MB"


def test_health_stays_live_while_a_maximal_prompt_is_tokenized():
    """A server that tokenizes prompts of any length (the character bound lifted): the
    tokenization of a large prompt runs in the worker pool, so /health keeps answering."""
    app = demo_app(limits=ServerLimits(prompt_chars_per_token=10**6))
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").status_code == 200
        result = {}

        def big_request():
            result["r"] = http.post(COMPLETIONS, json={"prompt": "abc " * 100_000, "max_tokens": 1})

        worker = threading.Thread(target=big_request)
        worker.start()
        health_times = []
        while worker.is_alive():
            t0 = time.monotonic()
            assert http.get("/health").status_code == 200
            health_times.append(time.monotonic() - t0)
            time.sleep(0.02)
        worker.join()
        assert result["r"].status_code == 400  # 300000 tokens do not fit 128
        assert "maximum context length" in result["r"].json()["error"]["message"]
        assert len(health_times) >= 3, "the prompt was not large enough to measure anything"
        assert max(health_times) < 1.0, health_times  # liveness, not performance


HOSTILE_TEMPLATES = {
    "'a' * 10**9": ("{{ 'a' * 1000000000 }}", "max_output_chars"),
    "nested loops 10**10": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                            "max_loop_iterations"),
    "doubling with ~": ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                        "max_output_chars"),
    "center padding": ("{{ 'a'|center(1000000000) }}", "max_output_chars"),
    "format width": ("{{ '%1000000000d' % 1 }}", "max_output_chars"),
    "2 ** 10**9": ("{{ 2 ** 1000000000 }}", "bits"),
    "exponential macro": ("{% macro d(n) %}{% if n %}{{ d(n-1) }}{{ d(n-1) }}{% else %}x{% endif %}{% endmacro %}{{ d(60) }}",
                          "rendering was stopped"),
    "endless recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed too deeply"),
    "huge output": ("{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}", "max_output_chars"),
    "text of a list of big strings": ("{% set b = 'x' * 5000 %}{{ 'a' ~ ([b] * 5000) }}", "max_output_chars"),
    "tojson indent": ("{{ messages|tojson(indent=1000000000) }}", "64 characters"),
    "translate": ("{{ ('a' * 5000).translate({97: 'b' * 5000}) }}", "max_output_chars"),
    "lipsum": ("{{ lipsum(n=100000000) }}", "max_output_chars"),
}


def test_hostile_chat_templates_are_bounded_per_request():
    """A checkpoint's template renders per request: each one is stopped by a limit, answered
    400 naming the template and the limit, and /health stays live meanwhile."""
    engine = FakeEngine()
    client = AsyncEngine(engine, max_queue=8)
    limits = ServerLimits(template_max_seconds=2.0, template_max_iterations=200_000)
    app = build_app(client, model_name="fake-model", limits=limits)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        for name, (template, limit) in HOSTILE_TEMPLATES.items():
            engine.tokenizer.chat_template = template
            done = threading.Event()
            result = {}

            def request():
                result["r"] = http.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 100}]})
                done.set()

            t = threading.Thread(target=request)
            t.start()
            while not done.is_set():
                t0 = time.monotonic()
                assert http.get("/health").status_code == 200
                assert time.monotonic() - t0 < 1.0, name
                done.wait(0.05)
            t.join()
            r = result["r"]
            check_answer(name, r.status_code, r.text, {400})
            message = r.json()["error"]["message"]
            assert "chat template of `fake-model`" in message and "sha256:" in message, message
            assert limit in message, (name, message)
        engine.tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
        assert http.post(CHAT, json={"messages": HI, "max_tokens": 2}).status_code == 200


def test_stalled_upload_times_out_with_408(server):
    thread, http = server
    head = post_raw(COMPLETIONS, b"x" * 100)[:-90]  # headers + 10 of the 100 bytes promised
    answer = raw_exchange(thread.port, head)  # then nothing more: the server gives up
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_timeout" and "--body_timeout" in body["error"]["message"]
    assert_serving(http)


def test_chunked_upload_over_the_limit_is_cut_off(server):
    thread, http = server
    head = ("POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n\r\n").encode()
    chunk = b"x" * (1024 * 1024)
    data = head + b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(9)) + b"0\r\n\r\n"
    answer = raw_exchange(thread.port, data)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert_serving(http)


@pytest.mark.parametrize("value", [b"Bearer hostile\x00-test-key", b"Bearer \x00", b"\x00\x00",
                                   b"Bearer hostile-test-key\x7f", b"Bearer \xff\xfe", b"Basic abc"])
def test_garbage_authorization_is_an_openai_401(server, value):
    thread, http = server
    request = (b"GET /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: " + value + b"\r\n\r\n")
    answer = raw_exchange(thread.port, request)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "invalid_api_key" and set(error) == {"message", "type", "param", "code"}
    assert_serving(http)


def test_malformed_http_is_an_openai_400(server):
    thread, http = server
    answer = raw_exchange(thread.port, b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Evil: a\x00b\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_http_request"
    assert_serving(http)


def test_sampling_is_numerically_safe():
    """Tiny temperatures are greedy in the limit; NaN/+inf logits are an error, never token 0."""
    from paddlellm.engine.sampling import NonFiniteLogitsError, SamplingParams, sample_row

    rng = np.random.default_rng(0)
    row = np.array([0.5, -1.0, 3.0, 2.9, -np.inf], dtype=np.float32)
    for t in (1e-38, 1e-45, 5e-324, 1e-300):
        assert {sample_row(row, SamplingParams(temperature=t), rng) for _ in range(20)} == {2}
    for bad in ([np.nan, 1, 2], [np.inf, 1, 2], [-np.inf, -np.inf, -np.inf]):
        for t in (0.0, 1e-38, 0.7):
            with pytest.raises(NonFiniteLogitsError):
                sample_row(np.array(bad, dtype=np.float32), SamplingParams(temperature=t), rng)
    # an ordinary temperature keeps the exact float32 arithmetic of generate (seeded parity)
    a = [sample_row(row, SamplingParams(temperature=0.8), np.random.default_rng(3)) for _ in range(5)]
    b = [sample_row(row, SamplingParams(temperature=0.8), np.random.default_rng(3)) for _ in range(5)]
    assert a == b


def test_limits_come_from_the_environment_and_are_validated():
    limits = ServerLimits.from_env({"PADDLELLM_MAX_BODY_BYTES": "1024", "PADDLELLM_BODY_TIMEOUT": "2.5"},
                                   max_json_depth=8)
    assert (limits.max_body_bytes, limits.body_timeout, limits.max_json_depth) == (1024, 2.5, 8)
    with pytest.raises(ValueError, match="PADDLELLM_PREP_THREADS='many' is not a number"):
        ServerLimits.from_env({"PADDLELLM_PREP_THREADS": "many"})
    with pytest.raises(ValueError, match="max_body_bytes must be a positive number"):
        ServerLimits(max_body_bytes=0)


def test_template_limits_apply_per_render_outside_the_server():
    """``apply_chat_template`` is bounded too; ``render_limits`` changes the bounds for a block."""
    from paddlellm.tokenizer import RenderLimits, TemplateLimitError, render_chat_template, render_limits

    conversation = [[{"role": "user", "content": "hi"}]]
    ok = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{{ 'x' * 3 }}{{ 2 ** 10 }}"
    assert render_chat_template(ok, conversation) == ["<user>hixxx1024"]
    with render_limits(RenderLimits(max_output_chars=10)):
        with pytest.raises(TemplateLimitError, match="rendered more than 10 characters"):
            render_chat_template("{% for i in range(20) %}x{% endfor %}", conversation)
        assert render_chat_template("{{ 'x' * 10 }}", conversation) == ["x" * 10]
    with render_limits(max_loop_iterations=50):
        with pytest.raises(TemplateLimitError, match="more than 50 loop iterations"):
            render_chat_template("{% for i in range(10) %}{% for j in range(10) %}{% endfor %}{% endfor %}",
                                 conversation)
    # the budget is per render: two renders of 40 iterations each pass a limit of 50
    with render_limits(max_loop_iterations=50):
        loop = "{% for i in range(40) %}{% endfor %}ok"
        assert render_chat_template(loop, conversation * 2) == ["ok", "ok"]


FUZZ_VALUES = [True, "yes", 2**70, None, "\udc80", [[1]]]  # bool, str, huge int, null, bad str, list
CHAT_FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
               "seed", "stop", "stream", "stream_options", "logprobs", "top_logprobs", "top_k",
               "repetition_penalty", "ignore_eos", "stop_token_ids", "frequency_penalty",
               "presence_penalty", "logit_bias", "user", "add_generation_prompt", "tools",
               "tool_choice", "functions", "function_call", "response_format"]
COMPLETION_FIELDS = ["prompt", "max_tokens", "logprobs", "echo", "suffix", "best_of", "n", "stop"]


def test_every_field_with_every_wrong_type_is_never_a_500(server):
    """Each field of both endpoints set to each value of a list of wrong (and some right)
    types: every answer is a 2xx or an OpenAI-shaped 4xx, never a 500 or a leaked exception."""
    _, http = server
    cases = [(CHAT, {"messages": HI, "max_tokens" if f != "max_tokens" else "max_completion_tokens": 1}, f)
             for f in CHAT_FIELDS]
    cases += [(COMPLETIONS, {"prompt": "hi", "max_tokens": 1}, f) for f in COMPLETION_FIELDS]
    seen = set()
    for i, (path, base, field) in enumerate(cases):
        for value in FUZZ_VALUES:
            body = json.dumps({**base, field: value}).encode()  # a lone surrogate as \\udc80
            r = http.post(path, content=body, headers={"content-type": "application/json"})
            allowed = set(range(200, 300)) | set(range(400, 500)) - {408}
            check_answer(f"{path} {field}={str(value)[:20]!r}", r.status_code, r.text, allowed)
            seen.add(r.status_code)
        if i % 8 == 0:
            assert_serving(http)
    assert {200, 400} <= seen
    assert_serving(http)
