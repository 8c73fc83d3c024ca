"""``llm serve`` with prefix caching and speculative decoding: its flags, answers equal to a
plain server's (text, stop reasons, usage, logprobs) and the prefix-cache metrics."""
from __future__ import annotations

import types

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.main import get_command
from typer.testing import CliRunner

import paddlellm.serving
from paddlellm.cli import build_app, main
from paddlellm.cli.infer import PREDICT_ENGINE_OPTIONS
from paddlellm.engine import EngineConfig, LLMEngine
from paddlellm.serving import AsyncEngine
from paddlellm.serving import build_app as build_server
from server_testing import ServerThread, demo_engine

CHAT = "/v1/chat/completions"
SYSTEM = ("You are a careful assistant. Answer briefly, in plain words, and say so when you "
          "do not know.")  # the demo model's context is 128 tokens
SPEC = dict(speculate_method="inference_with_reference", speculate_max_draft_token_num=3,
            speculate_max_ngram_size=2)


def test_serve_takes_the_speculative_and_caching_options_of_predict(monkeypatch, capsys):
    """Every engine option of ``llm predict`` (speculation included) is a flag of ``llm
    serve``; decoding itself (temperature, top_p, top_k, repetition_penalty, seed, n,
    logprobs) is chosen per request there."""
    root = get_command(build_app())
    serve_flags = {o for p in root.commands["serve"].params for o in p.opts}
    for name in PREDICT_ENGINE_OPTIONS + ("enable_prefix_caching",):
        assert f"--{name}" in serve_flags, name
    seen = {}

    def fake_create_app(model_name_or_path=None, *, config=None, api_key=None, **options):
        seen["config"] = config
        return types.SimpleNamespace(state=types.SimpleNamespace(
            server=types.SimpleNamespace(model_name="m")))

    monkeypatch.setattr(paddlellm.serving, "create_app", fake_create_app)
    monkeypatch.setattr(paddlellm.serving, "run_server", lambda app, **kw: None)
    args = ["serve", "--speculate_method", "inference_with_reference",
            "--speculate_max_draft_token_num", "4", "--speculate_max_ngram_size", "3",
            "--enable_prefix_caching", "false"]
    result = CliRunner().invoke(build_app(), args, env={})
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.speculate_method, config.speculate_max_draft_token_num,
            config.speculate_max_ngram_size, config.enable_prefix_caching) == (
        "inference_with_reference", 4, 3, False)
    result = CliRunner().invoke(build_app(), ["serve"], env={"PADDLELLM_ENABLE_PREFIX_CACHING": "0"})
    assert result.exit_code == 0 and seen["config"].enable_prefix_caching is False
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--enable_prefix_caching", "maybe"])
    assert exit_info.value.code == 2
    assert "error: --enable_prefix_caching: Input should be a valid boolean" in capsys.readouterr().err
    assert EngineConfig().enable_prefix_caching is True  # on by default


def _server(**options):
    base = demo_engine()
    engine = LLMEngine(base.model, base.tokenizer, base.config.replace(block_size=8, **options),
                       model_name=base.model_name)
    return build_server(AsyncEngine(engine, max_queue=16), model_name=engine.model_name)


def _ask(http, question: str, **extra) -> dict:
    body = {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": question}],
            "max_tokens": 12, "temperature": 0, "logprobs": True, "top_logprobs": 2, **extra}
    r = http.post(CHAT, json=body)
    r.raise_for_status()
    out = r.json()
    choice = out["choices"][0]
    tokens = [(t["token"], [x["token"] for x in t["top_logprobs"]], t["logprob"])
              for t in choice["logprobs"]["content"]]
    return {"text": choice["message"]["content"], "finish": choice["finish_reason"],
            "usage": out["usage"], "tokens": tokens}


def _complete(http, prompt: str) -> dict:
    r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 10, "temperature": 0,
                                           "logprobs": 2, "stop": ["\n"]})
    r.raise_for_status()
    out = r.json()
    choice = out["choices"][0]
    return {"text": choice["text"], "finish": choice["finish_reason"], "usage": out["usage"],
            "tokens": choice["logprobs"]["tokens"], "lps": choice["logprobs"]["token_logprobs"]}


def _metrics(http) -> dict[str, float]:
    fams = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    return {name: fams[f"paddlellm_{name}"].samples[0].value
            for name in ("prefix_cache_queries", "prefix_cache_hits", "kv_blocks_cached")}


def _session(app) -> tuple[list[dict], dict]:
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        answers = [_ask(http, q) for q in ("Name a colour.", "Count to five.")]
        answers.append(_ask(http, "Name a colour.", stop=[" "]))  # a stop string
        answers.append(_ask(http, "Repeat: a b c a b c a b c", max_tokens=3))  # length
        prompt = SYSTEM + "\nList: one two three one two three"
        answers += [_complete(http, prompt), _complete(http, prompt + " one")]
        return answers, _metrics(http)


def _same(a: dict, b: dict) -> bool:
    strip = lambda d: {k: v for k, v in d.items() if k not in ("tokens", "lps")}  # noqa: E731
    if strip(a) != strip(b):
        return False
    if "lps" in a:
        return a["tokens"] == b["tokens"] and a["lps"] == pytest.approx(b["lps"], abs=1e-5)
    return ([t[:2] for t in a["tokens"]] == [t[:2] for t in b["tokens"]]
            and [t[2] for t in a["tokens"]] == pytest.approx([t[2] for t in b["tokens"]], abs=1e-5))


def test_cached_speculative_server_answers_like_a_plain_one():
    plain, plain_metrics = _session(_server(enable_prefix_caching=False))
    cached, metrics = _session(_server(**SPEC))
    for i, (a, b) in enumerate(zip(cached, plain)):
        assert _same(a, b), (i, a, b)
    assert {a["finish"] for a in plain} == {"stop", "length"}
    assert plain_metrics == {"prefix_cache_queries": 0, "prefix_cache_hits": 0,
                             "kv_blocks_cached": 0}
    prompt_tokens = sum(a["usage"]["prompt_tokens"] for a in cached)
    assert metrics["prefix_cache_queries"] == prompt_tokens
    assert 0 < metrics["prefix_cache_hits"] < prompt_tokens
    assert metrics["kv_blocks_cached"] > 0
