"""``llm serve --lora_modules``: one server, one base, several LoRA adapters. Concurrent
requests for the base and two adapters (streaming and not, chat and completions, through
the official ``openai`` client) get the greedy text of an engine with that adapter merged;
``/v1/models`` lists the adapters with their parent; an unknown model is a 404 naming it;
the flag takes vLLM's ``NAME=PATH NAME=PATH`` form."""
from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from typer.testing import CliRunner

from paddlellm.engine import LLMEngine, SamplingParams
from server_testing import DEMO_MODEL, ServerThread
from test_engine_lora import make_adapter

BASE = "qwen-demo"
MESSAGES = [[{"role": "user", "content": "Name a colour."}],
            [{"role": "user", "content": "Count to three."}]]
PROMPTS = ["The capital of France is", "1, 2, 3,"]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    return {"a1": make_adapter(DEMO_MODEL, tmp / "a1", 1, scale=0.2),
            "a2": make_adapter(DEMO_MODEL, tmp / "a2", 2, scale=0.2, lora_rank=8,
                               target_modules="q_proj,v_proj,up_proj")}


@pytest.fixture(scope="module")
def url(adapters):
    from paddlellm.serving import create_app

    app = create_app(str(DEMO_MODEL), lora_modules=[(n, str(p)) for n, p in adapters.items()],
                     block_size=8)
    with ServerThread(app) as url:
        yield url


def reference(adapter, prompts_ids: list[list[int]]) -> list[dict]:
    """Greedy outputs of an engine with ``adapter`` merged (None: the base)."""
    engine = LLMEngine.from_pretrained(DEMO_MODEL, lora_path=str(adapter) if adapter else None)
    return engine.generate(prompts_ids, SamplingParams(max_tokens=MAX_TOKENS, temperature=0))


async def _all_at_once(url: str, models: list[str]) -> dict:
    """For every model: chat (streamed) and completions (not streamed), all concurrent."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none")

    async def chat(model: str, messages: list) -> tuple[str, str, str]:
        stream = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True)
        text, names, reason = "", set(), None
        async for chunk in stream:
            names.add(chunk.model)
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
        assert names == {model}
        return text, reason

    async def completion(model: str, prompt: str) -> tuple[str, str]:
        out = await client.completions.create(model=model, prompt=prompt,
                                              max_tokens=MAX_TOKENS, temperature=0)
        assert out.model == model
        return out.choices[0].text, out.choices[0].finish_reason

    jobs = {}
    for model in models:
        for i in range(2):
            jobs[(model, "chat", i)] = chat(model, MESSAGES[i])
            jobs[(model, "completion", i)] = completion(model, PROMPTS[i])
    results = await asyncio.gather(*jobs.values())
    await client.close()
    return dict(zip(jobs, results))


def test_concurrent_requests_for_base_and_adapters_equal_merged_engines(url, adapters):
    got = asyncio.run(_all_at_once(url, [BASE, "a1", "a2"]))
    with httpx.Client(base_url=url, timeout=60) as http:
        chat_ids = [http.post("/tokenize", json={"model": BASE, "messages": m}).json()["tokens"]
                    for m in MESSAGES]
        text_ids = [http.post("/tokenize", json={"prompt": p}).json()["tokens"] for p in PROMPTS]
    outputs = {}
    for model in (BASE, "a1", "a2"):
        ref = reference(adapters.get(model), chat_ids + text_ids)
        for i in range(2):
            for kind, r in (("chat", ref[i]), ("completion", ref[2 + i])):
                assert got[(model, kind, i)] == (r["text"], r["finish_reason"]), (model, kind, i)
        outputs[model] = [got[(model, kind, i)][0] for kind in ("chat", "completion")
                          for i in range(2)]
    # the adapters change the text (each somewhere among its four outputs, and differently)
    assert outputs["a1"] != outputs[BASE] and outputs["a2"] != outputs[BASE]
    assert outputs["a1"] != outputs["a2"]


def test_echo_logprobs_on_an_adapter(url, adapters):
    with httpx.Client(base_url=url, timeout=60) as http:
        body = {"prompt": PROMPTS[0], "max_tokens": 0, "echo": True, "logprobs": 0}
        a2 = http.post("/v1/completions", json={**body, "model": "a2"}).json()
        base = http.post("/v1/completions", json={**body, "model": BASE}).json()
    assert a2["model"] == "a2"
    ids = LLMEngine.from_pretrained(DEMO_MODEL).tokenizer.encode(PROMPTS[0])
    want = LLMEngine.from_pretrained(DEMO_MODEL, lora_path=str(adapters["a2"])).score_prompts([ids])
    lps = a2["choices"][0]["logprobs"]["token_logprobs"]
    assert max(abs(a - b["logprob"]) for a, b in zip(lps[1:], want[0][1:])) < 1e-4
    assert lps != base["choices"][0]["logprobs"]["token_logprobs"]


def test_models_lists_adapters_with_their_parent(url, adapters):
    with httpx.Client(base_url=url, timeout=30) as http:
        cards = http.get("/v1/models").json()["data"]
        one = http.get("/v1/models/a1").json()
    assert [(c["id"], c["parent"]) for c in cards] == [(BASE, None), ("a1", BASE), ("a2", BASE)]
    assert cards[0]["root"] == str(DEMO_MODEL) and cards[2]["root"] == str(adapters["a2"])
    assert one == cards[1]


def test_unknown_model_is_a_404_naming_it(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="a3", prompt="hi", max_tokens=2)
    assert err.value.body["code"] == "model_not_found"
    assert "The model `a3` does not exist. Served: qwen-demo, a1, a2" in err.value.body["message"]
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/chat/completions", json={"model": "a3", "messages": MESSAGES[0]})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        assert http.get("/v1/models/a3").status_code == 404
        # and the server still serves the adapters
        ok = http.post("/v1/completions", json={"model": "a1", "prompt": "hi", "max_tokens": 2})
        assert ok.status_code == 200 and ok.json()["model"] == "a1"


def test_adapter_named_like_the_base_is_refused(adapters):
    from paddlellm.engine import EngineConfig
    from paddlellm.errors import ConfigError
    from paddlellm.serving import create_app

    a1 = str(adapters["a1"])
    with pytest.raises(ConfigError, match="adapter name 'base' is the served model's name"):
        create_app(config=EngineConfig(), served_model_name="base", lora_modules=[("base", a1)])
    with pytest.raises(ValueError, match="adapter name 'qwen-demo' is the served model's name"):
        create_app(str(DEMO_MODEL), lora_modules=[("qwen-demo", a1)])
    with pytest.raises(ConfigError, match="adapter name 'default' is a name of the base model"):
        create_app(str(DEMO_MODEL), lora_modules=[("default", a1)])  # PaddleNLP's alias


def test_serve_flag_takes_several_name_path_pairs(monkeypatch):
    import paddlellm.serving
    from paddlellm.cli import build_app

    seen = []

    def fake_create_app(config, api_key=None):
        seen.append(config.lora_modules)
        raise SystemExit(0)

    monkeypatch.setattr(paddlellm.serving, "create_app", fake_create_app)
    runner = CliRunner()
    app = build_app()
    assert runner.invoke(app, ["serve", "--lora-modules", "a=/x", "b=/y", "--port", "9"]).exit_code == 0
    assert runner.invoke(app, ["serve", "--lora_modules", "c=/z"],
                         env={"PADDLELLM_LORA_MODULES": "a=/x"}).exit_code == 0
    assert runner.invoke(app, ["serve"], env={"PADDLELLM_LORA_MODULES": "a=/x b=/y"}).exit_code == 0
    assert seen == [(("a", "/x"), ("b", "/y")), (("c", "/z"),), (("a", "/x"), ("b", "/y"))]
    bad = runner.invoke(app, ["serve", "--lora_modules", "a"])
    assert str(bad.exception) == "--lora_modules: 'a' is not NAME=PATH"  # `llm`: exit 2
