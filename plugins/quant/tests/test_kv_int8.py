"""Int8 KV cache: the cache layer against a NumPy reference, static scales from calibration,
generation through ``model.new_cache``, perplexity close to float, a8w8c8 round trip."""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.modeling.auto import quantize_model
from paddlellm.interfaces import KVCacheLayer
from paddlellm.modeling.kv_cache import LayerKVCache
from paddlellm_quant.calibration import batches, demo_texts, encode_texts, token_blocks
from paddlellm_quant.kv_int8 import (Int8KVCache, Int8LayerKVCache, calibrate_kv_scales,
                                     enable_int8_kv_cache, setup_kv_cache_quant)

DEMO = "core/paddlellm/assets/qwen-demo"


@pytest.fixture(scope="module")
def data():
    tok = AutoTokenizer.from_pretrained(DEMO)
    calib = batches(token_blocks(encode_texts(tok, demo_texts(48, "train", seed=1)), 64), 4)
    held = encode_texts(tok, demo_texts(48, "eval", seed=2))
    prompts = [tok.encode(t.split("?")[0] + "?") for t in demo_texts(6, "eval", seed=3)]
    return calib, held, prompts


def _ref_quant(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x / scale), -127, 127) * scale


def test_static_layer_matches_numpy_and_appends():
    rng = np.random.default_rng(0)
    k1, v1 = rng.normal(size=(2, 5, 3, 8)).astype(np.float32), rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    k2, v2 = rng.normal(size=(2, 1, 3, 8)).astype(np.float32) * 9, rng.normal(size=(2, 1, 3, 8)).astype(np.float32)
    ks, vs = np.array([0.02, 0.03, 0.01], np.float32), np.array([0.025, 0.02, 0.03], np.float32)
    cache = Int8LayerKVCache(2, 8, 3, 8, k_scale=paddle.to_tensor(ks), v_scale=paddle.to_tensor(vs))
    assert isinstance(cache, KVCacheLayer)
    cache.update(paddle.to_tensor(k1), paddle.to_tensor(v1))
    k, v = cache.update(paddle.to_tensor(k2), paddle.to_tensor(v2))
    assert len(cache) == 6 and tuple(k.shape) == (2, 6, 3, 8) and cache.k.dtype == paddle.int8
    ref_k = _ref_quant(np.concatenate([k1, k2], 1), ks[:, None])  # clipped where |k| > 127 * scale
    np.testing.assert_allclose(k.numpy(), ref_k, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v.numpy(), _ref_quant(np.concatenate([v1, v2], 1), vs[:, None]), rtol=1e-6, atol=1e-7)
    cache.reorder(paddle.to_tensor([1, 1]))
    cache.crop(4)
    k, _ = cache.update(paddle.to_tensor(k2), paddle.to_tensor(v2))
    np.testing.assert_allclose(k.numpy()[0, :4], ref_k[1, :4], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="KV cache overflow: 9 positions > capacity 8"):
        cache.update(paddle.to_tensor(k1[:, :4]), paddle.to_tensor(v1[:, :4]))
    with pytest.raises(ValueError, match="both k_scale and v_scale"):
        Int8LayerKVCache(1, 4, 3, 8, k_scale=paddle.to_tensor(ks))


def test_dynamic_layer_uses_per_token_scales():
    rng = np.random.default_rng(1)
    k = rng.normal(size=(1, 4, 2, 16)).astype(np.float32) * np.array([1, 100, 0.01, 5], np.float32)[None, :, None, None]
    k[0, 2, 1] = 0.0  # an all-zero head row keeps scale 1 (no division by zero)
    cache = Int8LayerKVCache(1, 4, 2, 16)
    out, _ = cache.update(paddle.to_tensor(k), paddle.to_tensor(k))
    scale = np.abs(k).max(-1, keepdims=True) / 127
    scale[scale == 0] = 1.0
    np.testing.assert_allclose(out.numpy(), _ref_quant(k, scale), rtol=1e-6, atol=1e-9)
    rel = np.abs(out.numpy() - k).max(-1) / np.maximum(np.abs(k).max(-1), 1e-30)
    assert rel.max() <= 0.5 / 127 + 1e-6  # every token keeps 7 bits of its own range
    # int8 storage: a quarter of float32 plus one float32 scale per (token, head)
    fp = LayerKVCache(1, 4, 2, 16)
    assert cache.nbytes() == 2 * (4 * 2 * 16 + 4 * 4 * 2) and fp.k.size * 4 * 2 == 4 * 2 * 4 * 2 * 16


def test_calibrated_static_scales_cover_the_cached_keys(data):
    calib, held, _ = data
    model = AutoModelForCausalLM.from_pretrained(DEMO)
    absmax = calibrate_kv_scales(model, calib)
    assert len(absmax) == model.config.num_layers and absmax[0][0].shape == (model.config.num_kv_heads,)
    # the recorded maxima equal the post-RoPE keys of a float cache on the same blocks
    cache = model.new_cache(1, 64)
    with paddle.no_grad():
        model(paddle.to_tensor(calib[0][:1]), cache=cache)
    k0 = np.abs(cache[0].k.numpy()).max(axis=(0, 1, 3))
    assert np.all(absmax[0][0] >= k0 - 1e-6)
    enable_int8_kv_cache(model, "static", absmax)
    np.testing.assert_allclose(model.model.layers[2].self_attn.cache_scales.v_scale.numpy(),
                               absmax[2][1] / 127, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown KV-cache quantization 'int4'; valid: static, dynamic"):
        enable_int8_kv_cache(model, "int4")
    with pytest.raises(ValueError, match="needs calibration data"):
        setup_kv_cache_quant(model, "static", None)


def _cache_ppl(model, held) -> float:
    """Perplexity with every sequence run through ``model.new_cache`` (prefill attends over
    the cache's dequantized keys/values)."""
    nll, n = 0.0, 0
    with paddle.no_grad():
        for seq in held:
            ids = paddle.to_tensor([seq])
            logits = model(ids, cache=model.new_cache(1, len(seq)))[0, :-1]
            nll += float(F.cross_entropy(logits, ids[0, 1:].unsqueeze(-1), reduction="sum"))
            n += len(seq) - 1
    return math.exp(nll / n)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_kv_cache_quality_and_generate(data, mode):
    calib, held, prompts = data
    base = AutoModelForCausalLM.from_pretrained(DEMO)
    model = AutoModelForCausalLM.from_pretrained(DEMO)
    setup_kv_cache_quant(model, mode, calib)
    assert isinstance(model.new_cache(1, 4), Int8KVCache)
    # a registered layout chosen by name, not methods patched onto the model
    assert model.kv_cache_layout == f"int8_{mode}" and model.kv_cache_dtype == "int8"
    assert not {"new_cache", "new_paged_cache", "kv_cache_dtype"} & set(vars(model))
    float_ppl, int8_ppl = _cache_ppl(base, held), _cache_ppl(model, held)
    print(f"{mode}: float-cache ppl {float_ppl:.4f}, int8-cache ppl {int8_ppl:.4f}")
    assert int8_ppl != float_ppl  # the int8 path really ran
    assert abs(int8_ppl / float_ppl - 1) < 0.01
    same = 0
    for p in prompts:
        ids = paddle.to_tensor([p])
        out = model.generate(ids, max_new_tokens=8).numpy()
        same += int(np.array_equal(out, base.generate(ids, max_new_tokens=8).numpy()))
    assert same >= len(prompts) - 1  # greedy answers agree (at most one flips on a near tie)


def test_a8w8c8_round_trip(data, tmp_path):
    calib, held, prompts = data
    model = quantize_model(AutoModelForCausalLM.from_pretrained(DEMO), "a8w8c8", calib,
                           {"smooth_search": False})
    assert model.quantization_config["kv_cache_quant"] == "static"
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.quantization_config["kv_cache_quant"] == "static"
    for i in range(model.config.num_layers):
        a, b = model.model.layers[i].self_attn.cache_scales, loaded.model.layers[i].self_attn.cache_scales
        np.testing.assert_array_equal(a.k_scale.numpy(), b.k_scale.numpy())
        np.testing.assert_array_equal(a.v_scale.numpy(), b.v_scale.numpy())
    ids = paddle.to_tensor([held[0]])
    np.testing.assert_array_equal(loaded(ids, cache=loaded.new_cache(1, len(held[0]))).numpy(),
                                  model(ids, cache=model.new_cache(1, len(held[0]))).numpy())
    p = paddle.to_tensor([prompts[0]])
    np.testing.assert_array_equal(loaded.generate(p, max_new_tokens=6).numpy(),
                                  model.generate(p, max_new_tokens=6).numpy())


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_serving_engine_uses_an_int8_paged_pool(data, mode):
    """The engine's paged pool is int8 too (``model.new_paged_cache``); continuous batching
    over it gives the same greedy tokens as ``model.generate`` over the contiguous int8 cache."""
    from paddlellm.engine import LLMEngine, SamplingParams
    from paddlellm.modeling.kv_manager import PagedKVCache

    calib, _, _ = data
    tok = AutoTokenizer.from_pretrained(DEMO)
    model = AutoModelForCausalLM.from_pretrained(DEMO)
    float_bytes = LLMEngine(model, tok, block_size=4, num_blocks=64).cache.nbytes
    setup_kv_cache_quant(model, mode, calib)
    engine = LLMEngine(model, tok, block_size=4, num_blocks=64)
    assert isinstance(engine.cache, PagedKVCache) and engine.cache.key_pools[0].dtype == paddle.int8
    assert engine.cache.nbytes < (0.26 if mode == "static" else 0.3) * float_bytes
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 356, n).tolist() for n in (5, 23, 9, 14)]
    results = engine.generate(prompts, SamplingParams(max_tokens=10, temperature=0, ignore_eos=True))
    for p, r in zip(prompts, results):
        ref = model.generate(paddle.to_tensor([p]), max_new_tokens=10, eos_token_id=[]).numpy()[0, len(p):]
        assert r["token_ids"] == ref.tolist()
    assert engine.stats()["kv_blocks_used"] == 0
    # a byte budget buys four times the blocks of a float32 pool
    budget = 1 << 20
    n_float = LLMEngine(AutoModelForCausalLM.from_pretrained(DEMO), tok, block_size=4, max_num_seqs=512,
                        kv_cache_bytes=budget).cache.num_blocks
    assert LLMEngine(model, tok, block_size=4, max_num_seqs=512, kv_cache_bytes=budget).cache.num_blocks == 4 * n_float
