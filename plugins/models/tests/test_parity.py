"""Parity with transformers on tiny random checkpoints of every family and variant."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from models_testutil import FIXTURES, NAMES, reference, rel_err

TOL = 1e-5


def test_every_family_has_a_fixture():
    types = {json.loads((FIXTURES / n / "config.json").read_text())["model_type"] for n in NAMES}
    assert types == {"llama", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "mistral", "mixtral", "gemma", "gemma2",
                     "phi3", "gpt2", "opt",
                     "bloom"}


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_transformers(name, load):
    ref, model = reference(name), load(name)
    with paddle.no_grad():
        single = model(paddle.to_tensor(ref["single_ids"])).numpy()
        batch = model(paddle.to_tensor(ref["batch_ids"]),
                      attention_mask=paddle.to_tensor(ref["batch_mask"])).numpy()
    assert single.shape == ref["single_logits"].shape
    assert rel_err(single, ref["single_logits"]) <= TOL
    keep = ref["batch_mask"].astype(bool)  # padded positions carry no meaning
    assert rel_err(batch[keep], ref["batch_logits"][keep]) <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_greedy_matches_transformers(name, load):
    ref, model = reference(name), load(name)
    n, t = ref["greedy_single"].shape[1], ref["single_ids"].shape[1]
    single = model.generate(ref["single_ids"], max_new_tokens=n, eos_token_id=None).numpy()
    np.testing.assert_array_equal(single[:, t:], ref["greedy_single"])
    batch = model.generate(ref["batch_ids"], attention_mask=ref["batch_mask"], max_new_tokens=n,
                           eos_token_id=None).numpy()
    np.testing.assert_array_equal(batch[:, :t], ref["batch_ids"])
    np.testing.assert_array_equal(batch[:, t:], ref["greedy_batch"])


@pytest.mark.parametrize("name", NAMES)
def test_beam_search_matches_transformers(name, load):
    ref, model = reference(name), load(name)
    t = ref["batch_ids"].shape[1]
    common = dict(attention_mask=ref["batch_mask"], max_new_tokens=8, decode_strategy="beam_search",
                  num_beams=3, length_penalty=1.0, pad_token_id=1)
    plain = model.generate(ref["batch_ids"], eos_token_id=None, **common).numpy()[:, t:]
    np.testing.assert_array_equal(plain, ref["beam_batch"])
    with_eos = model.generate(ref["batch_ids"], eos_token_id=int(ref["beam_eos"]), **common).numpy()
    np.testing.assert_array_equal(with_eos[:, t:], ref["beam_eos_batch"])


@pytest.mark.parametrize("name,change", [
    ("mistral", {"sliding_window": None}),
    ("qwen2", {"full_attention_layers": []}),
    ("qwen2", {"sliding_window": None}),
    ("llama_rope_dynamic", {"rope_scaling": None}),
    ("llama_rope_yarn", {"rope_scaling": None}),
    ("llama_rope_llama3", {"rope_scaling": None}),
    ("llama_rope_linear", {"rope_scaling": None}),
    ("gemma", {"norm_unit_offset": False}),
    ("phi3_longrope", {"rope_scaling": None}),
    ("phi3_longrope", {"sliding_window": None}),
    ("gemma2", {"attention_softcap": None}),
    ("gemma2", {"final_logit_softcap": None}),
    ("gemma2", {"sliding_window": None}),
    ("qwen2_moe", {"norm_topk_prob": True}),
])
def test_the_fixtures_exercise_the_feature(name, change):
    """Dropping the feature a variant is about breaks parity (so the tests above can fail)."""
    from paddlellm.checkpoint import load_hf_weights

    ref, family = reference(name), None
    from paddlellm.modeling.auto import family_for_model_type

    hf = json.loads((FIXTURES / name / "config.json").read_text())
    family = family_for_model_type(hf["model_type"])
    model = family.build(family.config_from_hf(hf).replace(**change), init=False)
    load_hf_weights(model, FIXTURES / name)
    with paddle.no_grad():
        single = model(paddle.to_tensor(ref["single_ids"])).numpy()
    assert rel_err(single, ref["single_logits"]) > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_save_and_reload_is_exact(name, load, tmp_path):
    from paddlellm import AutoModelForCausalLM

    ref, model = reference(name), load(name)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    original = json.loads((FIXTURES / name / "config.json").read_text())
    assert saved["model_type"] == original["model_type"]
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = paddle.to_tensor(ref["single_ids"])
    with paddle.no_grad():
        np.testing.assert_array_equal(again(ids).numpy(), model(ids).numpy())
    assert again.config == model.config


def _low_precision_matmul(dtype: str) -> bool:
    try:
        x = paddle.ones([2, 2], dtype=dtype)
        paddle.matmul(x, x)
        return True
    except Exception:  # Paddle's CPU build has no bf16/fp16 matmul kernel in eager mode
        return False


@pytest.mark.parametrize("name", ["llama", "qwen2_moe", "gpt2", "bloom"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_load(name, dtype, load):
    model, full = load(name, dtype), load(name)
    # without low-precision kernels (CPU) the matrices stay in dtype and compute is float32
    upcast = getattr(model, "storage_dtype", None) == dtype
    assert model.dtype == ("float32" if upcast else dtype)
    params = dict(model.named_parameters())
    for pname, p in full.named_parameters():
        stored = dtype if not upcast or p.ndim == 2 else "float32"
        assert str(params[pname].dtype) == f"paddle.{stored}", pname
        np.testing.assert_array_equal(params[pname].astype("float32").numpy(),
                                      p.astype(dtype).astype("float32").numpy())
    if not upcast and not _low_precision_matmul(dtype):
        pytest.skip(f"no {dtype} matmul kernel on {paddle.get_device()}")
    ref = reference(name)
    with paddle.no_grad():
        out = model(paddle.to_tensor(ref["single_ids"])).astype("float32").numpy()
    assert np.isfinite(out).all()
    assert rel_err(out, ref["single_logits"]) < (5e-2 if dtype == "bfloat16" else 1e-2)


@pytest.mark.parametrize("name", ["bloom", "gpt2", "qwen2_moe"])
def test_save_in_bfloat16_and_in_shards(name, load, tmp_path):
    from paddlellm import AutoModelForCausalLM
    from paddlellm.checkpoint import CheckpointReader

    model = load(name)
    model.save_pretrained(tmp_path / "bf16", dtype="bf16")
    with CheckpointReader(tmp_path / "bf16") as r:
        assert {r.dtype(k) for k in r.keys()} == {"bfloat16"}
    again = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").named_parameters())
    for pname, p in model.named_parameters():
        np.testing.assert_array_equal(again[pname].numpy(),
                                      p.astype("bfloat16").astype("float32").numpy())
    files = model.save_pretrained(tmp_path / "shards", max_shard_size="10KB")
    assert len(files) > 3 and (tmp_path / "shards" / "model.safetensors.index.json").is_file()
    ref = reference(name)
    ids = paddle.to_tensor(ref["single_ids"])
    with paddle.no_grad():
        np.testing.assert_array_equal(AutoModelForCausalLM.from_pretrained(tmp_path / "shards")(ids).numpy(),
                                      model(ids).numpy())
