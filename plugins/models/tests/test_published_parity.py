"""Parity of the families transformers has no class for (ChatGLM-6B, ChatGLM2/3, Baichuan/Baichuan2)
with torch references written from their authors' published modeling code
(``scripts/fixtures/reference_models``, fixtures by ``scripts/fixtures/make_family_fixtures.py``)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import paddle
import pytest

from models_testutil import FIXTURES, rel_err

PUBLISHED = FIXTURES / "published"
NAMES = sorted(p.stem for p in PUBLISHED.glob("*.npz"))
ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "fixtures" / "make_family_fixtures.py"
DEV_PYTHON = os.environ.get("PADDLELLM_DEV_PYTHON", "/work/devenv/bin/python")
TOL = 1e-5
_MODELS: dict = {}


def ref(name: str) -> dict[str, np.ndarray]:
    with np.load(PUBLISHED / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def model(name: str):
    from paddlellm import AutoModelForCausalLM

    if name not in _MODELS:
        _MODELS[name] = AutoModelForCausalLM.from_pretrained(PUBLISHED / name)
    return _MODELS[name]


def _hf(name: str) -> dict:
    return json.loads((PUBLISHED / name / "config.json").read_text())


def test_fixtures_cover_the_families():
    assert {m.family.name for m in map(model, NAMES)} == {"chatglm", "chatglm2", "baichuan"}
    assert NAMES == ["baichuan2_13b", "baichuan2_7b", "baichuan_7b", "chatglm", "chatglm2",
                     "chatglm3_bias_layernorm", "chatglm_tied"]


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_the_reference(name):
    r, m = ref(name), model(name)
    with paddle.no_grad():
        single = m(paddle.to_tensor(r["single_ids"])).numpy()
        batch = m(paddle.to_tensor(r["batch_ids"]), attention_mask=paddle.to_tensor(r["batch_mask"])).numpy()
    assert rel_err(single, r["single_logits"]) <= TOL
    keep = r["batch_mask"].astype(bool)
    assert rel_err(batch[keep], r["batch_logits"][keep]) <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_greedy_matches_the_reference(name):
    r, m = ref(name), model(name)
    n, t = r["greedy_single"].shape[1], r["single_ids"].shape[1]
    single = m.generate(r["single_ids"], max_new_tokens=n, eos_token_id=None).numpy()
    np.testing.assert_array_equal(single[:, t:], r["greedy_single"])
    batch = m.generate(r["batch_ids"], attention_mask=r["batch_mask"], max_new_tokens=n,
                       eos_token_id=None).numpy()
    np.testing.assert_array_equal(batch[:, t:], r["greedy_batch"])


@pytest.mark.parametrize("name,change", [
    ("chatglm2", {"rotary_interleaved": False}),
    ("chatglm2", {"rotary_dim": None}),
    ("chatglm3_bias_layernorm", {"rope_theta": 10000.0}),
    ("baichuan2_7b", {"lm_head_norm": False}),
    ("baichuan2_13b", {"position": "rope"}),
    ("chatglm", {"prefix_lm": False}),
    ("chatglm", {"residual_post_norm_scale": None}),
    ("chatglm", {"position_encoding_2d": False, "rotary_dim": None}),
    ("chatglm", {"fused_qkv": "concat"}),
    ("chatglm_tied", {"mask_token_ids": []}),
])
def test_the_fixtures_exercise_the_feature(name, change):
    """Dropping the feature a variant is about breaks parity (so the tests above can fail)."""
    from paddlellm.checkpoint import load_hf_weights

    family = model(name).family
    m = family.build(family.config_from_hf(_hf(name)).replace(**change), init=False)
    load_hf_weights(m, PUBLISHED / name)
    with paddle.no_grad():
        single = m(paddle.to_tensor(ref(name)["single_ids"])).numpy()
    assert rel_err(single, ref(name)["single_logits"]) > 1e-3


@pytest.mark.parametrize("change", [{"activation": "gelu"}, {"rope_inv_freq_fp16": False}])
def test_chatglm_fine_details_matter_at_the_parity_tolerance(change):
    """The exact GELU instead of THUDM's tanh formula, or float32 inverse frequencies instead
    of its float16 ones, move the logits past the 1e-5 parity tolerance."""
    from paddlellm.checkpoint import load_hf_weights

    family = model("chatglm").family
    m = family.build(family.config_from_hf(_hf("chatglm")).replace(**change), init=False)
    load_hf_weights(m, PUBLISHED / "chatglm")
    with paddle.no_grad():
        single = m(paddle.to_tensor(ref("chatglm")["single_ids"])).numpy()
    assert rel_err(single, ref("chatglm")["single_logits"]) > 2 * TOL  # parity: ~5e-7


@pytest.mark.parametrize("name", NAMES)
def test_save_keeps_the_published_layout_and_reloads_exactly(name, tmp_path):
    from paddlellm import AutoModelForCausalLM
    from paddlellm.checkpoint import CheckpointReader

    m = model(name)
    m.save_pretrained(tmp_path)
    with CheckpointReader(tmp_path) as saved, CheckpointReader(PUBLISHED / name) as original:
        assert set(saved.keys()) == {k for k in original.keys() if "inv_freq" not in k}
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config == m.config
    ids = paddle.to_tensor(ref(name)["single_ids"])
    with paddle.no_grad():
        np.testing.assert_array_equal(again(ids).numpy(), m(ids).numpy())


def test_the_reference_loads_what_we_save(tmp_path):
    probe = subprocess.run([DEV_PYTHON, "-c", "import torch, safetensors"], capture_output=True) \
        if Path(DEV_PYTHON).exists() else None
    if probe is None or probe.returncode != 0:
        pytest.skip(f"torch not available at {DEV_PYTHON} (set PADDLELLM_DEV_PYTHON)")
    args = []
    for name in NAMES:
        model(name).save_pretrained(tmp_path / name)
        args += [str(tmp_path / name), name]
    proc = subprocess.run([DEV_PYTHON, str(SCRIPT), "--check-roundtrip", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(errors) == NAMES
    assert all(v <= TOL for v in errors.values()), errors


def test_published_configs_choose_the_variant():
    """The published config.json files do not name ALiBi or NormHead: 13B sizes mean ALiBi,
    Baichuan2's vocabulary means the normalised head; ChatGLM-6B v1 is refused by name."""
    from paddlellm.auto import family_for_model_type

    baichuan = family_for_model_type("baichuan")
    common = {"model_type": "baichuan", "intermediate_size": 13696, "num_hidden_layers": 40,
              "num_attention_heads": 40, "model_max_length": 4096, "rms_norm_eps": 1e-6}
    b2_13b = baichuan.config_from_hf({**common, "architectures": ["BaichuanForCausalLM"],
                                      "hidden_size": 5120, "vocab_size": 125696})
    assert b2_13b.position == "alibi" and b2_13b.lm_head_norm and b2_13b.max_position_embeddings == 4096
    b1_7b = baichuan.config_from_hf({**common, "architectures": ["BaiChuanForCausalLM"],
                                     "hidden_size": 4096, "intermediate_size": 11008,
                                     "num_attention_heads": 32, "vocab_size": 64000,
                                     "max_position_embeddings": 4096})
    assert b1_7b.position == "rope" and not b1_7b.lm_head_norm
    glm = family_for_model_type("chatglm", _hf("chatglm2"))
    assert glm.name == "chatglm2"
    with pytest.raises(ValueError, match="ChatGLM-6B \\(v1\\)"):
        glm.config_from_hf({"model_type": "chatglm", "position_encoding_2d": True,
                            "hidden_size": 4096, "inner_hidden_size": 16384})
    with pytest.raises(ValueError, match="quantization_bit=4"):
        glm.config_from_hf({**_hf("chatglm2"), "quantization_bit": 4})
    with pytest.raises(ValueError, match="pre_seq_len"):
        glm.config_from_hf({**_hf("chatglm2"), "pre_seq_len": 128})
    c = glm.config_for("chatglm3-6b")
    assert (c.num_kv_heads, c.head_dim, c.rotary_dim, c.vocab_size) == (2, 128, 64, 65024)


def test_chatglm_v1_and_v2_share_model_type_and_are_told_apart_by_their_keys(tmp_path):
    """``model_type: chatglm`` is ChatGLM-6B with ``position_encoding_2d``/``inner_hidden_size``
    and ChatGLM2/3 with ``multi_query_attention``/``padded_vocab_size`` -- in AutoModel,
    ``llm convert`` and the registry; neither is an error naming the file."""
    from paddlellm import AutoModelForCausalLM
    from paddlellm.auto import family_for_model_type
    from paddlellm.errors import UnknownPluginError
    from paddlellm_models.registry_data import family_for_model_type as plugin_lookup

    v1 = family_for_model_type("chatglm", _hf("chatglm"))
    assert v1.name == "chatglm" and plugin_lookup("chatglm", _hf("chatglm")).name == "chatglm"
    assert plugin_lookup("chatglm", _hf("chatglm2")).name == "chatglm2"
    c = v1.config_from_hf({"model_type": "chatglm", "hidden_size": 4096, "num_layers": 28,
                           "num_attention_heads": 32, "inner_hidden_size": 16384,
                           "vocab_size": 130528, "position_encoding_2d": True,
                           "max_sequence_length": 2048, "layernorm_epsilon": 1e-5,
                           "bos_token_id": 130004, "eos_token_id": 130005,
                           "mask_token_id": 130000, "gmask_token_id": 130001, "pad_token_id": 3})
    assert c == v1.config_for("chatglm-6b")  # the preset is the published config
    assert (c.tie_embeddings, c.rotary_dim, c.mask_token_ids) == (True, 64, [130001, 130000])
    assert c.residual_post_norm_scale == pytest.approx(56 ** 0.5)
    bad = tmp_path / "neither"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "chatglm", "hidden_size": 64}))
    with pytest.raises(UnknownPluginError, match="neither.*config.json.*chatglm"):
        AutoModelForCausalLM.from_pretrained(bad)


def test_chatglm_positions_follow_the_published_generation():
    """GLM 2D positions: 0.. over the context, then the mask token's position frozen and the
    block position counting 1, 2, ... -- for the prompt's <sop> and every generated token."""
    m = model("chatglm")
    prompt = [5, 6, 7, 61, 62]  # ... [gMASK] <sop>
    np.testing.assert_array_equal(m.sequence_positions(prompt + [9, 9], 0, 7),
                                  [[0, 1, 2, 3, 3, 3, 3], [0, 0, 0, 0, 1, 2, 3]])
    np.testing.assert_array_equal(m.sequence_positions(prompt + [9, 9], 5, 7), [[3, 3], [2, 3]])
    masked = [5, 60, 7, 8, 62]  # [MASK] inside the prompt: positions freeze at it
    np.testing.assert_array_equal(m.sequence_positions(masked + [9], 0, 6),
                                  [[0, 1, 2, 3, 1, 1], [0, 0, 0, 0, 1, 2]])
