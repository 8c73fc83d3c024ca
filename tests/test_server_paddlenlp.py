"""PaddleNLP's serving requests against `llm serve`: the inference tutorial's flask body and
OpenAI client example, and the serving tool's `{"text": ...}` protocol."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.server_testing import ServerThread, demo_app

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def http():
    with ServerThread(demo_app()) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def test_flask_body_message_max_length_src_length(http):
    r = http.post(CHAT, json={"message": [{"role": "user", "content": "你好"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    r = http.post(CHAT, json={"message": [{"role": "user", "content": "What colour is the eel?"}],
                              "max_length": 3, "src_length": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] == 4 and usage["completion_tokens"] <= 3


@pytest.mark.parametrize("model", ["default", "paddlenlp"])
def test_paddlenlp_model_names(http, model):
    r = http.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                              "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_serving_tool_text_body(http):
    r = http.post(CHAT, json={"text": "What colour is the eel?", "req_id": "r1", "max_dec_len": 4,
                              "temperature": 0.0, "return_usage": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["req_id"] == "r1" and body["error_code"] == 0 and body["is_end"] == 1
    assert body["result"] == body["tokens_all"] and len(body["token_ids"]) <= 4
    assert body["usage"]["completion_tokens"] == len(body["token_ids"])


def test_serving_tool_streams_json_lines(http):
    with http.stream("POST", CHAT, json={"messages": [{"role": "user", "content": "hi"}],
                                         "req_id": 7, "max_dec_len": 5, "stream": True}) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines and lines[-1]["is_end"] == 1 and all(x["req_id"] == "7" for x in lines)
    assert [x["send_idx"] for x in lines] == list(range(len(lines)))


@pytest.mark.parametrize("body,param", [
    ({"text": "a", "messages": [{"role": "user", "content": "b"}]}, None),
    ({"text": "a", "min_dec_len": 3}, "min_dec_len"),
    ({"text": "a", "frequency_score": 0.5}, "frequency_score"),
    ({"text": 5}, None),
])
def test_serving_tool_bad_bodies_are_400(http, body, param):
    r = http.post(CHAT, json=body)
    assert r.status_code == 400, r.text
    if param:
        assert r.json()["error"]["param"] == param
