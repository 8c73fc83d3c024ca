"""Every column of the seed's table, briefly, for the families added from their authors'
published code (ChatGLM-6B, ChatGLM2/3, Baichuan2 with ALiBi + NormHead, Yuan 2.0): each case runs the real entry
point for 2 steps (or one call) on the family's tiny preset and checks what it produced."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlellm import AutoModelForCausalLM
from paddlellm.tokenizer import AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "plugins" / "models" / "tests" / "fixtures" / "published"
FAMILIES = {"chatglm": "chatglm", "chatglm2": "chatglm2", "baichuan2": "baichuan2-alibi-tiny",
            "yuan": "yuan-tiny"}
#: the family's class name; the published-layout fixture its engine and conversion cases use
FAMILY_NAME = {"chatglm": "chatglm", "chatglm2": "chatglm2", "baichuan2": "baichuan", "yuan": "yuan"}
FIXTURE = {"chatglm": "chatglm", "chatglm2": "chatglm2", "baichuan2": "baichuan2_13b", "yuan": "yuan"}
#: the family's chat format as a template (the tokens are plain text in the demo tokenizer)
TEMPLATES = {
    # ChatGLM-6B's chat(): a first question bare, with history "[Round i]\n问：q\n答：a\n" from 0
    "chatglm": ("{% for m in messages %}{% if m['role'] == 'user' %}{% if messages|length > 1 %}"
                "[Round {{ loop.index0 // 2 }}]\n问：{{ m['content'] }}\n答：{% else %}"
                "{{ m['content'] }}{% endif %}{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"),
    "chatglm2": ("{% for m in messages %}{% if m['role'] == 'user' %}[Round {{ loop.index0 // 2 + 1 }}]"
                 "\n\n问：{{ m['content'] }}\n\n答：{% else %}{{ m['content'] }}\n\n{% endif %}"
                 "{% endfor %}"),
    "baichuan2": ("{% for m in messages %}{% if m['role'] == 'user' %}<reserved_106>"
                  "{% else %}<reserved_107>{% endif %}{{ m['content'] }}{% endfor %}"
                  "{% if add_generation_prompt %}<reserved_107>{% endif %}"),
    # Yuan 2.0: turns joined by <n>, the user's turn closed by <sep> (the answer ends with <eod>)
    "yuan": ("{% for m in messages %}{% if not loop.first %}<n>{% endif %}{{ m['content'] }}"
             "{% endfor %}{% if add_generation_prompt %}<sep>{% endif %}"),
}
SHORT = ["--max_steps", "2", "--max_length", "64", "--per_device_train_batch_size", "2",
         "--logging_steps", "1", "--warmup_steps", "0"]


def run(*args: str) -> dict:
    """``llm run ARGS`` in this process (the CLI's own path: config, composition, stage)."""
    from paddlellm.plugin.config import build_run_config
    from paddlellm.plugin.manager import get_plugin_manager
    from paddlellm.training.compose import run as run_job

    manager = get_plugin_manager()
    return run_job(build_run_config(None, list(args), registry=manager.registry), manager)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """``(name, pretrained dir, data dir)``: 2 pretraining steps of the family's tiny preset
    on the demo corpus (column 1), and small SFT / preference files for the others."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"What is {i} + {j}? It is {i + j}. 问 答 reserved\n"
                              for i in range(12) for j in range(5)))
    summary = run("--model", FAMILIES[name], "--stage", "pretrain", "--data", str(corpus),
                  "--output_dir", str(root / "pretrain"), *SHORT)
    assert summary["steps"] == 2
    qa = [{"src": f"What is {i} + {i}?", "tgt": str(2 * i)} for i in range(8)]
    write_jsonl(root / "sft.jsonl", qa)
    write_jsonl(root / "dpo.jsonl", [{"src": [r["src"]], "tgt": [], "response": [r["tgt"], "no"],
                                      "sort": [1, 0]} for r in qa])
    write_jsonl(root / "kto.jsonl", [{"src": [r["src"]], "tgt": [], "response": [r["tgt"] if i % 2 else "no"],
                                      "sort": [i % 2]} for i, r in enumerate(qa)])
    return name, root / "pretrain", root


def test_pretrain_writes_the_published_layout(family):
    name, base, _ = family
    config = json.loads((base / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(base)
    assert model.family.name == FAMILY_NAME[name]
    if name == "chatglm":
        assert config["model_type"] == "chatglm" and config["position_encoding_2d"] is True
        assert "inner_hidden_size" in config and "padded_vocab_size" not in config
    elif name == "chatglm2":
        assert config["model_type"] == "chatglm" and "padded_vocab_size" in config
    elif name == "yuan":
        assert config["model_type"] == "yuan" and config["use_lfa"] is True
        assert model.kv_cache_layout == "yuan_lfa"
    else:
        assert config["position_embedding"] == "ALIBI" and config["norm_head"] is True


@pytest.mark.parametrize("peft", [None, "lora", "prefix"])
def test_sft_full_lora_and_prefix(family, peft, tmp_path):
    name, base, data = family
    extra = ["--peft", peft] if peft else []
    summary = run("--stage", "sft", "--model_name_or_path", str(base), "--data",
                  str(data / "sft.jsonl"), "--eval_data", str(data / "sft.jsonl"),
                  "--output_dir", str(tmp_path), *extra, *SHORT)
    assert summary["steps"] == 2 and np.isfinite(summary["train_loss_last"])
    if peft is None:
        assert (tmp_path / "model.safetensors").is_file()
        return
    adapter = json.loads((tmp_path / "adapter_config.json").read_text())
    assert adapter["peft_type"] == {"lora": "LORA", "prefix": "PREFIX_TUNING"}[peft]
    if peft == "lora":  # default targets reach the fused projections, saved under HF names
        fused = {"chatglm": {"query_key_value"}, "chatglm2": {"query_key_value", "dense_h_to_4h"},
                 "baichuan2": {"W_pack"},
                 "yuan": {"q_proj", "k_proj", "v_proj", "up_proj", "gate_proj"}}[name]
        assert fused <= set(adapter["target_modules"])
    option = {"lora": "lora_path", "prefix": "prefix_path"}[peft]
    again = AutoModelForCausalLM.from_pretrained(base, **{option: tmp_path})
    assert again.peft_method == peft


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_alignment(family, loss, tmp_path):
    _, base, data = family
    summary = run("--align", loss, "--model_name_or_path", str(base), "--data",
                  str(data / f"{loss}.jsonl"), "--eval_data", str(data / f"{loss}.jsonl"),
                  "--output_dir", str(tmp_path), *SHORT)
    assert summary["steps"] == 2 and (tmp_path / "model.safetensors").is_file()


def test_merge_lora_into_the_published_checkpoint(family, tmp_path):
    """``llm merge --lora_model_path`` on the HF-layout base: the fused tensors take the update."""
    from paddlellm.modeling.peft import apply_peft, save_adapter
    from paddlellm_merge.cli import run_merge_cli

    _, base, _ = family
    model = apply_peft(AutoModelForCausalLM.from_pretrained(base), "lora", {"lora_rank": 2})
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():
        if not p.stop_gradient:
            p.set_value(paddle.to_tensor(p.numpy() + 0.2 * rng.standard_normal(p.shape).astype("float32")))
    save_adapter(model.eval(), tmp_path / "adapter")
    run_merge_cli(["--base_model_path", str(base), "--lora_model_path", str(tmp_path / "adapter"),
                   "--output_path", str(tmp_path / "merged")], log=lambda *a: None)
    ids = paddle.to_tensor(rng.integers(0, model.config.vocab_size, (1, 10)))
    with paddle.no_grad():
        want = model(ids).numpy()
        got = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("quant_type", ["weight_only_int8", "gptq"])
def test_quantize_round_trip(family, quant_type, tmp_path):
    """Weight-only int8 on load, GPTQ (int4, group 32) with calibration: the fused
    projections are quantized too, and the saved model reloads bit for bit."""
    from paddlellm.modeling.auto import quantize_model
    from paddlellm_quant.layers import WeightOnlyLinear

    _, base, _ = family
    float_model = AutoModelForCausalLM.from_pretrained(base)
    rng = np.random.default_rng(1)
    ids = paddle.to_tensor(rng.integers(0, float_model.config.vocab_size, (1, 10)))
    if quant_type == "gptq":
        model = AutoModelForCausalLM.from_pretrained(base)
        quantize_model(model, "gptq", [rng.integers(0, model.config.vocab_size, (2, 16))],
                       {"group_size": 32})
    else:
        model = AutoModelForCausalLM.from_pretrained(base, quant_type=quant_type)
    from paddlellm_quant.packed import GPTQLinear

    expected = GPTQLinear if quant_type == "gptq" else WeightOnlyLinear  # GPTQ: its standard layout
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.qkv_proj if hasattr(attn, "qkv_proj") else attn.q_proj, expected)
    with paddle.no_grad():
        q, f = model(ids).numpy(), float_model(ids).numpy()
    assert np.abs(q - f).max() < (0.05 if quant_type == "weight_only_int8" else 0.3) * np.abs(f).max()
    model.save_pretrained(str(tmp_path))
    with paddle.no_grad():
        np.testing.assert_array_equal(AutoModelForCausalLM.from_pretrained(tmp_path)(ids).numpy(), q)


def test_torch_bin_conversion(family, tmp_path):
    """``llm convert`` of the PyTorch ``.bin`` the reference wrote (no torch here): the
    converted model has the reference's logits."""
    from typer.testing import CliRunner

    from paddlellm.cli import build_app

    name, _, _ = family
    fixture = FIXTURE[name]
    result = CliRunner().invoke(build_app(), ["convert", str(PUBLISHED / f"{fixture}_bin"),
                                              str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "parity check passed" in result.output
    ref = dict(np.load(PUBLISHED / f"{fixture}.npz"))
    with paddle.no_grad():
        out = AutoModelForCausalLM.from_pretrained(tmp_path)(paddle.to_tensor(ref["single_ids"])).numpy()
    assert np.abs(out - ref["single_logits"]).max() <= 1e-5 * np.abs(ref["single_logits"]).max()


def test_engine_with_the_paged_cache_matches_the_reference(family):
    """The serving engine (paged KV cache, continuous batching) decodes the reference's
    greedy tokens on the published-layout fixture, both rows of the batch at once."""
    from paddlellm.engine import LLMEngine, SamplingParams

    name, _, _ = family
    fixture = FIXTURE[name]
    ref = dict(np.load(PUBLISHED / f"{fixture}.npz"))
    engine = LLMEngine(AutoModelForCausalLM.from_pretrained(PUBLISHED / fixture), block_size=4)
    prompts = [ref["single_ids"][0].tolist(),
               [t for t, m in zip(ref["batch_ids"][1], ref["batch_mask"][1]) if m]]
    outs = engine.generate(prompts, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
    assert [o["token_ids"] for o in outs] == [ref["greedy_single"][0].tolist(),
                                             ref["greedy_batch"][1].tolist()]
    if name == "chatglm":  # bidirectional context: cached prefix blocks are not reusable
        again = LLMEngine(engine.model, block_size=4, enable_prefix_caching=True)
        assert not again.prefix_caching and "prefix-LM" in again.prefix_caching_off_reason


def test_serving_with_the_family_chat_template(family, tmp_path):
    """``/v1/chat/completions`` renders the family's chat format and answers with the
    model's greedy continuation of exactly that prompt."""
    from starlette.testclient import TestClient

    from paddlellm.engine import LLMEngine
    from paddlellm.serving import AsyncEngine, build_app

    name, base, _ = family
    served = tmp_path / "served"
    shutil.copytree(base, served)
    tok_config = json.loads((served / "tokenizer_config.json").read_text())
    tok_config["chat_template"] = TEMPLATES[name]
    (served / "tokenizer_config.json").write_text(json.dumps(tok_config))
    engine = LLMEngine.from_pretrained(served)
    tokenizer = AutoTokenizer.from_pretrained(served)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    if name == "chatglm":  # the first question is bare; the rounds show with history
        messages = [*messages, {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "And 3 + 3?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == {"chatglm": "[Round 0]\n问：What is 2 + 2?\n答：4\n[Round 1]\n问：And 3 + 3?\n答：",
                      "chatglm2": "[Round 1]\n\n问：What is 2 + 2?\n\n答：",
                      "baichuan2": "<reserved_106>What is 2 + 2?<reserved_107>",
                      "yuan": "What is 2 + 2?<sep>"}[name]
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    want = engine.model.generate(paddle.to_tensor([ids]), max_new_tokens=4, eos_token_id=None).numpy()[0, len(ids):]
    app = build_app(AsyncEngine(engine), model_name="m")
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json={
            "model": "m", "messages": messages, "max_tokens": 4, "temperature": 0,
            "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["prompt_tokens"] == len(ids)
    assert body["choices"][0]["message"]["content"] == tokenizer.decode(want.tolist(), skip_special_tokens=True)


def test_yuan_smoothing_groups_follow_the_filter():
    """AWQ/SmoothQuant fold scales into the norm a group of projections reads alone: Yuan's
    q/k read the filter's output norm and v shares the layer's input norm with the filter's
    convolutions (no fold). Folding into the input norm, as for LLaMA, changes the filter's
    input: A8W8 logits then miss the float ones by 84% (measured) instead of 20%."""
    import warnings

    from paddlellm.modeling.auto import quantize_model
    from paddlellm_quant.smoothquant import linear_groups

    base = PUBLISHED / "yuan_untied"
    model = AutoModelForCausalLM.from_pretrained(base)
    attn = model.model.layers[0].self_attn
    groups = {tuple(r.name.rsplit(".", 1)[-1] for r in g.linears): g.norm for g in linear_groups(model)[:3]}
    assert groups == {("q_proj", "k_proj"): attn.lf_gate.output_layernorm, ("v_proj",): None,
                      ("o_proj",): None}
    rng = np.random.default_rng(0)
    ids = paddle.to_tensor(rng.integers(3, 64, (2, 20)))
    with paddle.no_grad():
        want = model(ids).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(model, "a8w8", [rng.integers(3, 64, (4, 32)) for _ in range(4)], {})
    with paddle.no_grad():
        got = model(ids).numpy()
    assert np.abs(got - want).max() < 0.4 * np.abs(want).max()
