"""Parity of the families transformers has no class for (ChatGLM-6B, ChatGLM2/3, Baichuan/Baichuan2, Yuan 2.0)
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
    assert {m.family.name for m in map(model, NAMES)} >= {"chatglm", "chatglm2", "baichuan", "yuan"}
    assert {"baichuan2_13b", "baichuan2_7b", "baichuan_7b", "chatglm", "chatglm2",
            "chatglm3_bias_layernorm", "chatglm_tied", "yuan", "yuan_untied"} <= set(NAMES)


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
    from paddlellm.modeling.auto import family_for_model_type

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
    from paddlellm.modeling.auto import family_for_model_type
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


# --- Yuan 2.0: the localized filter and its cache ------------------------------------------------

def _yuan_variant(change) -> "object":
    """The ``yuan`` fixture with one of its blocks altered by ``change(model)``."""
    from paddlellm.checkpoint import load_hf_weights

    family = model("yuan").family
    m = family.build(family.config_from_hf(_hf("yuan")), init=False)
    load_hf_weights(m, PUBLISHED / "yuan")
    change(m)
    return m.eval()


def _no_filter(m):
    for layer in m.model.layers:
        lf = layer.self_attn.lf_gate
        for conv in (lf.conv1, lf.conv2):
            conv.weight.set_value(paddle.zeros_like(conv.weight))


def _plain_heads(m):
    import types

    def qkv(self, x, ctx=None, cache=None):  # queries from q_proj, keys from k_proj alone
        b, t, h, d = x.shape[0], x.shape[1], self.num_heads, self.head_dim
        f = self.lf_gate(x, None, None, cache)
        return (self.q_proj(f).reshape([b, t, h, d]), self.k_proj(f).reshape([b, t, h, d]),
                self.v_proj(x).reshape([b, t, h, d]))

    for layer in m.model.layers:
        layer.self_attn._qkv = types.MethodType(qkv, layer.self_attn)


def _swap_mlp(m):
    for layer in m.model.layers:
        mlp = layer.mlp
        gate, up = mlp.gate_proj.weight.numpy(), mlp.up_proj.weight.numpy()
        mlp.gate_proj.weight.set_value(up)
        mlp.up_proj.weight.set_value(gate)


@pytest.mark.parametrize("change", [_no_filter, _plain_heads, _swap_mlp])
def test_yuan_fixture_exercises_its_blocks(change):
    """Without the filter, with LLaMA's head split or with the MLP's gate/up the other way
    round, parity breaks (so the parity tests can fail)."""
    r = ref("yuan")
    with paddle.no_grad():
        single = _yuan_variant(change)(paddle.to_tensor(r["single_ids"])).numpy()
    assert rel_err(single, r["single_logits"]) > 1e-3


def test_yuan_weight_names_are_the_published_ones():
    from paddlellm.checkpoint import CheckpointReader

    with CheckpointReader(PUBLISHED / "yuan") as reader:
        keys = set(reader.keys())
    assert {"model.layers.0.self_attn.lf_gate.conv1.weight", "model.layers.0.self_attn.lf_gate.conv2.bias",
            "model.layers.1.self_attn.lf_gate.output_layernorm.weight",
            "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.gate_proj.weight"} <= keys
    assert "lm_head.weight" not in keys  # tied, as published
    conv = model("yuan").model.layers[0].self_attn.lf_gate.conv1.weight
    assert conv.shape == [16, 32, 2, 1]  # Conv2d(H, H/2, (2, 1)) as stored


def test_yuan_engine_keeps_the_filter_state_through_preemption_and_speculation():
    """The paged engine's filter state follows the blocks: preempted sequences recompute,
    n-gram drafts that are rejected are rolled back, several sequences share steps; the
    greedy tokens stay the reference's."""
    from paddlellm.engine import LLMEngine, SamplingParams

    r = ref("yuan")
    prompts = [r["single_ids"][0].tolist(), [t for t, m in zip(r["batch_ids"][1], r["batch_mask"][1]) if m],
               r["batch_ids"][0].tolist()]
    want = [r["greedy_single"][0].tolist(), r["greedy_batch"][1].tolist(), r["greedy_batch"][0].tolist()]
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    # 19 blocks of 2: the three sequences (28 tokens each) cannot all stay: preemption
    tight = LLMEngine(model("yuan"), block_size=2, num_blocks=19)
    assert [o["token_ids"] for o in tight.generate(prompts, params)] == want
    spec = LLMEngine(model("yuan"), block_size=4, speculate_method="inference_with_reference",
                     speculate_max_draft_token_num=3, speculate_max_ngram_size=2)
    assert [o["token_ids"] for o in spec.generate(prompts, params)] == want
    assert spec.counters["spec_draft_tokens"] > 0


def test_yuan_cached_generate_and_padding_equal_the_rows_alone():
    r, m = ref("yuan"), model("yuan")
    n = r["greedy_single"].shape[1]
    with paddle.no_grad():
        ids = paddle.to_tensor(r["single_ids"])
        full = m(ids).numpy()
        cache = m.new_cache(1, ids.shape[1] + 1)
        split = np.concatenate([m(ids[:, :1], cache=cache).numpy(), m(ids[:, 1:2], cache=cache).numpy(),
                                m(ids[:, 2:], cache=cache).numpy()], axis=1)  # 1 + 1 + rest
    assert rel_err(split, full) <= TOL
    beams = m.generate(r["single_ids"], max_new_tokens=n, num_beams=2, eos_token_id=None).numpy()
    assert beams.shape[1] == r["single_ids"].shape[1] + n


def test_yuan_refuses_a_cache_without_filter_state():
    m = model("yuan")
    m.kv_cache_layout = "float"
    try:
        with pytest.raises(ValueError, match="yuan_lfa"):
            m.generate(ref("yuan")["single_ids"], max_new_tokens=2, eos_token_id=None)
    finally:
        m.kv_cache_layout = "yuan_lfa"


def test_yuan_configs():
    from paddlellm.modeling.auto import family_for_model_type

    yuan = family_for_model_type("yuan")
    c = yuan.config_for("yuan2-2b")
    assert (c.hidden_size, c.num_layers, c.num_heads, c.vocab_size, c.tie_embeddings) == (
        2048, 24, 32, 135040, True)
    assert c.eos_token_id == 77185
    for bad, match in (({"use_shareqk": True}, "use_shareqk"), ({"use_lfa": False}, "use_lfa"),
                       ({"num_key_value_heads": 2}, "num_key_value_heads")):
        with pytest.raises(ValueError, match=match):
            yuan.config_from_hf({**_hf("yuan"), **bad})


class _Appending:
    """A differentiable appending KV cache of the alignment stage's kind (no reorder)."""

    paged = False

    def __init__(self, n: int) -> None:
        self.layers = [self._Layer() for _ in range(n)]

    class _Layer:
        k = v = None

        def update(self, k, v):
            self.k = k if self.k is None else paddle.concat([self.k, k], axis=1)
            self.v = v if self.v is None else paddle.concat([self.v, v], axis=1)
            return self.k, self.v

        def __len__(self):
            return 0 if self.k is None else self.k.shape[1]

    def __getitem__(self, i):
        return self.layers[i]

    @property
    def seq_length(self):
        return len(self.layers[0])

    def repeat_rows(self, times):
        for layer in self.layers:
            layer.k = paddle.repeat_interleave(layer.k, times, axis=0)
            layer.v = paddle.repeat_interleave(layer.v, times, axis=0)


def test_yuan_filter_over_an_appending_cache_with_repeated_rows():
    """A left-padded prompt encoded once, its rows repeated for two responses (as DPO's
    shared-prompt layout does): the responses' logits equal whole-sequence forwards."""
    r, m = ref("yuan"), model("yuan")
    prompt, pmask = r["batch_ids"][:, :12], r["batch_mask"][:, :12]  # row 1 left-padded
    responses = r["single_ids"][:, :4].repeat(4, axis=0)  # (4, 4): two per prompt
    with paddle.no_grad():
        cache = _Appending(len(m.model.layers))
        m.forward_hidden(paddle.to_tensor(prompt), attention_mask=paddle.to_tensor(pmask), cache=cache)
        cache.repeat_rows(2)
        rows_mask = np.concatenate([pmask.repeat(2, axis=0), np.ones((4, 4), dtype=pmask.dtype)], axis=1)
        got = m(paddle.to_tensor(responses), attention_mask=paddle.to_tensor(rows_mask), cache=cache).numpy()
        for i in range(4):
            keep = pmask[i // 2].astype(bool)
            whole = np.concatenate([prompt[i // 2][keep], responses[i]])[None]
            want = m(paddle.to_tensor(whole)).numpy()[0, -4:]
            assert rel_err(got[i], want) <= TOL


def test_yuan_engine_budget_counts_the_filter_state():
    """The layout's extra bytes per token (H per layer) enter the engine's block budget: the
    same budget holds fewer Yuan blocks than keys and values alone would fill."""
    from paddlellm.engine import LLMEngine
    from paddlellm.modeling.kv_manager import block_bytes

    m = model("yuan")
    c = m.config
    budget = 64 * block_bytes(c.num_layers, 4, c.num_kv_heads, c.head_dim, "float32")
    engine = LLMEngine(m, block_size=4, kv_cache_bytes=budget, max_model_len=64, max_num_seqs=64)
    per_block = block_bytes(c.num_layers, 4, c.num_kv_heads, c.head_dim, "float32") + 4 * c.num_layers * c.hidden_size * 4
    assert engine.cache.num_blocks == budget // per_block < 64
    assert engine.cache.nbytes <= budget


def test_yuan_engine_beam_search_equals_generate():
    """Beams share blocks and copy them on write: the filter pool is forked and copied with
    the keys/values, so the engine's beam search equals contiguous-cache beam search."""
    from paddlellm.engine import LLMEngine

    r, m = ref("yuan"), model("yuan")
    prompt = r["single_ids"][0].tolist()
    want = m.generate(r["single_ids"], max_new_tokens=8, num_beams=3, eos_token_id=None).numpy()[0, len(prompt):]
    (got,) = LLMEngine(m, block_size=4).beam_search([prompt], 3, 8, ignore_eos=True)
    assert got["token_ids"] == want.tolist()
