"""Several LoRA adapters on one engine (``lora_modules``): requests for the base and for
different adapters run in the same steps, and each gets the greedy tokens of an engine with
that adapter merged (``lora_path``), on the demo model and on families whose projections
are fused (GPT-2 ``c_attn``, Bloom ``query_key_value``, Baichuan ``W_pack``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlellm.modeling import peft
from paddlellm.api import AutoModelForCausalLM
from paddlellm.engine import LLMEngine, SamplingParams, default_model_path
from paddlellm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ROOT / "plugins" / "models" / "tests" / "fixtures"
GREEDY = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)


def make_adapter(base: Path, out: Path, seed: int, scale: float = 0.1, **options) -> Path:
    """A ``--peft lora`` adapter of ``base`` with random non-zero B (as after training)."""
    model = peft.apply_peft(AutoModelForCausalLM.from_pretrained(base), "lora",
                            {"lora_rank": 4, **options})
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.set_value(paddle.to_tensor(rng.normal(0, scale, p.shape).astype("float32")))
    peft.save_adapter(model, out)
    return out


def merged_tokens(base: Path, adapter: Path | None, prompts, **options) -> list[list[int]]:
    engine = LLMEngine.from_pretrained(base, lora_path=str(adapter) if adapter else None,
                                       **options)
    return [r["token_ids"] for r in engine.generate(prompts, GREEDY)]


@pytest.fixture(scope="module")
def demo_adapters(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapters")
    base = default_model_path()
    # different ranks and targets: rows are padded to the largest rank
    return base, {"a1": make_adapter(base, tmp / "a1", 1),
                  "a2": make_adapter(base, tmp / "a2", 2, lora_rank=8,
                                     target_modules="q_proj,v_proj,down_proj")}


def test_mixed_steps_equal_merged_single_adapter_engines(demo_adapters):
    base, adapters = demo_adapters
    engine = LLMEngine.from_pretrained(base, lora_modules=list(adapters.items()), block_size=8)
    assert engine.adapter_names == ("a1", "a2")
    prompts = [[5, 17, 99, 200, 31], [7, 8, 9], [100, 101, 102, 103, 104, 105, 106], [3, 4, 40]]
    names = [None, "a1", "a2", "a1"]
    for i, (ids, name) in enumerate(zip(prompts, names)):
        engine.add_request(f"r{i}", ids, GREEDY, adapter=name)
    # an adapter's requests never share prefix-cache blocks with the base's or another's
    assert [engine._requests[f"r{i}"].cache_salt for i in range(4)] == [
        None if n is None else f"adapter:{n}" for n in names]
    first = engine.step()  # one forward: the prefills of the base and both adapters
    assert sorted(o.request_id for o in first) == ["r0", "r1", "r2", "r3"]
    got = {o.request_id: list(o.new_token_ids) for o in first}
    while engine.has_unfinished_requests():
        for o in engine.step():  # mixed decode steps
            got[o.request_id] += o.new_token_ids
    want = {name: merged_tokens(base, adapters.get(name), prompts, block_size=8)
            for name in (None, "a1", "a2")}
    for i, name in enumerate(names):
        assert got[f"r{i}"] == want[name][i], name
    # the adapters change the output (else this test could not fail)
    assert len({tuple(want[n][0]) for n in want}) == 3
    # echo logprobs (score_prompts) on an adapter: the merged engine's
    merged = LLMEngine.from_pretrained(base, lora_path=str(adapters["a2"]))
    a = engine.score_prompts([prompts[2]], adapter="a2")[0]
    b = merged.score_prompts([prompts[2]])[0]
    assert max(abs(x["logprob"] - y["logprob"]) for x, y in zip(a[1:], b[1:])) < 1e-4
    with pytest.raises(ValueError, match="unknown adapter 'a3'; served adapters: a1, a2"):
        engine.add_request("bad", [1, 2], GREEDY, adapter="a3")


@pytest.mark.parametrize("family", ["gpt2", "bloom", "baichuan2"])
def test_fused_projections_per_row(family, tmp_path):
    base = FAMILIES / ("published/baichuan2_13b" if family == "baichuan2" else family)
    a1 = make_adapter(base, tmp_path / "a1", 1, scale=0.3)
    a2 = make_adapter(base, tmp_path / "a2", 2, scale=0.3, lora_rank=2)
    fused = {"gpt2": "c_attn", "bloom": "query_key_value", "baichuan2": "W_pack"}[family]
    assert fused in json.loads((a1 / "adapter_config.json").read_text())["target_modules"]
    prompts = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    names = ["a1", None, "a2"]
    engine = LLMEngine.from_pretrained(base, lora_modules=[("a1", str(a1)), ("a2", str(a2))],
                                       block_size=4, max_model_len=32)
    got = [r["token_ids"] for r in engine.generate(prompts, GREEDY, adapter=names)]
    for i, (name, adapter) in enumerate(zip(names, [a1, None, a2])):
        assert got[i] == merged_tokens(base, adapter, [prompts[i]], block_size=4,
                                       max_model_len=32)[0], name


def test_adapters_that_do_not_fit_are_refused(demo_adapters, tmp_path):
    base, adapters = demo_adapters
    other = FAMILIES / "llama"  # another base (other shapes)
    foreign = make_adapter(other, tmp_path / "foreign", 3)
    cfg = json.loads((foreign / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None  # no name to compare: the shapes tell
    (foreign / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=f"{foreign}: module .* trained on another base"):
        LLMEngine.from_pretrained(base, lora_modules=[("f", str(foreign))])
    renamed = tmp_path / "renamed"  # same shapes, but made for another model by name
    renamed.mkdir()
    for f in adapters["a1"].iterdir():
        (renamed / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((renamed / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "someorg/another-model"
    (renamed / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=f"r={renamed}: the adapter was trained on "
                                          "'someorg/another-model'"):
        LLMEngine.from_pretrained(base, lora_modules=[("r", str(renamed))])
    with pytest.raises(ConfigError, match="adapter name 'a1' is given twice"):
        LLMEngine.from_pretrained(base, lora_modules=["a1=x", "a1=y"])
    with pytest.raises(ConfigError, match="give one of them"):
        LLMEngine.from_pretrained(base, lora_path=str(adapters["a1"]),
                                  lora_modules=[("a2", str(adapters["a2"]))])
    with pytest.raises(ValueError, match="adapter name 'qwen-demo-instruct' is the served"):
        LLMEngine.from_pretrained(base, lora_modules=[("qwen-demo-instruct", str(adapters["a1"]))])
