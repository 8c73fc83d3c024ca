"""Paged attention is exact: kernel vs a float64 reference per sequence, and model logits
through a paged cache vs a contiguous cache vs no cache, for a mixed prefill+decode batch."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm import AutoModelForCausalLM
from paddlellm.modeling.kv_manager import BlockManager, PagedKVCache
from paddlellm.testing.attention import numpy_attention
from paddlellm_kernels_reference.kernel import kernel

pd = paddle.to_tensor



@pytest.mark.parametrize("features", [
    {}, {"sliding_window": 3}, {"alibi_slopes": np.array([0.5, 0.25, 0.125, 0.0625], np.float32)},
    {"softcap": 2.0, "scale": 0.4},
])
def test_mixed_batch_kernel_matches_float64_reference(features):
    """Three sequences in one call: a 5-token prefill, a decode after 9 cached, 3 new after 4."""
    rng = np.random.default_rng(0)
    hq, hkv, d, bs = 4, 2, 8, 4
    totals, new = [5, 10, 7], [5, 1, 3]
    full = [(rng.standard_normal((1, t, hq, d)), rng.standard_normal((1, t, hkv, d)),
             rng.standard_normal((1, t, hkv, d))) for t in totals]
    full = [tuple(x.astype(np.float32) for x in f) for f in full]
    cache = PagedKVCache(1, num_blocks=12, block_size=bs, kv_heads=hkv, head_dim=d)
    ids = ["a", "b", "c"]
    cache.blocks.allocate("x", 6)  # another sequence's blocks: tables are not contiguous
    for s, t in zip(ids, totals):
        cache.blocks.allocate(s, t)
    # earlier calls cached the first (total - new) tokens of each sequence
    prev = [(s, t - n) for s, t, n in zip(ids, totals, new) if t - n > 0]
    view = cache.batch([s for s, _ in prev], [0] * len(prev), [c for _, c in prev])
    kk = np.concatenate([full[ids.index(s)][1][:, :c] for s, c in prev], axis=1)
    vv = np.concatenate([full[ids.index(s)][2][:, :c] for s, c in prev], axis=1)
    view[0].write(pd(kk), pd(vv))
    view = cache.batch(ids, [t - n for t, n in zip(totals, new)], new)
    q = np.concatenate([f[0][:, -n:] for f, n in zip(full, new)], axis=1)  # (1, N, Hq, D)
    k = np.concatenate([f[1][:, -n:] for f, n in zip(full, new)], axis=1)
    v = np.concatenate([f[2][:, -n:] for f, n in zip(full, new)], axis=1)
    args = {key: pd(val) if isinstance(val, np.ndarray) else val for key, val in features.items()}
    got = kernel(pd(q), pd(k), pd(v), cache=view[0], **args).numpy()  # (1, N, Hq, D)
    ref = np.concatenate([numpy_attention(f[0][:, -n:], f[1], f[2], **features)
                          for f, n in zip(full, new)], axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_paged_rejects_padding_masks():
    cache = PagedKVCache(1, num_blocks=2, block_size=4, kv_heads=1, head_dim=4)
    cache.blocks.allocate("a", 2)
    view = cache.batch(["a"], [0], [2])
    x = pd(np.ones((1, 2, 1, 4), np.float32))
    with pytest.raises(ValueError, match="no attention_mask"):
        kernel(x, x, x, cache=view[0], attention_mask=pd(np.ones((1, 2), np.int64)))


@pytest.mark.parametrize("preset", ["llama-tiny", "mistral-tiny", "bloom-tiny", "gemma2-tiny"])
def test_model_logits_paged_equal_contiguous_and_no_cache(preset):
    paddle.seed(0)
    overrides = {"vocab_size": 300}
    if preset == "mistral-tiny":
        overrides["sliding_window"] = 4
    model = AutoModelForCausalLM.from_config(preset, **overrides)
    model.eval()
    c = model.config
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 300, n).tolist() for n in (9, 6, 3)]
    cache = PagedKVCache(c.num_layers, num_blocks=16, block_size=4, kv_heads=c.num_kv_heads,
                         head_dim=c.head_dim)
    names = ["a", "b", "c"]
    with paddle.no_grad():
        # step 1: prefill the first 7 / 6 tokens of a / b; step 2: a decodes token 8,
        # b decodes token 7 (its last), c prefills 3
        plan = [(["a", "b"], [0, 0], [7, 5]), (["a", "b", "c"], [7, 5, 0], [1, 1, 3])]
        got = {}
        for ids, cached, new in plan:
            for s, cc, n in zip(ids, cached, new):
                cache.blocks.allocate(s, cc + n)
            toks = sum((seqs[names.index(s)][cc:cc + n] for s, cc, n in zip(ids, cached, new)), [])
            pos = sum((list(range(cc, cc + n)) for cc, n in zip(cached, new)), [])
            view = cache.batch(ids, cached, new)
            logits = model(pd(np.array([toks])), position_ids=pd(np.array([pos])), cache=view)
            offs = np.cumsum([0] + new)
            for i, s in enumerate(ids):
                got.setdefault(s, []).append(logits[0, offs[i]:offs[i + 1]].numpy())
        for s, seq in zip(names, seqs):
            n = sum(x.shape[0] for x in got[s])
            paged = np.concatenate(got[s])  # (n, V) logits of positions 0..n-1
            nocache = model(pd(np.array([seq[:n]])))[0].numpy()
            contiguous_cache = model.new_cache(1, n)
            first = model(pd(np.array([seq[:n - 1]])), cache=contiguous_cache)[0].numpy()
            last = model(pd(np.array([seq[n - 1:n]])), cache=contiguous_cache)[0].numpy()
            contiguous = np.concatenate([first, last])
            np.testing.assert_allclose(paged, nocache, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(paged, contiguous, rtol=1e-4, atol=1e-5)


def test_block_manager_allocates_frees_and_maps_slots():
    bm = BlockManager(num_blocks=4, block_size=2)
    assert bm.allocate("a", 3) == [0, 1]
    assert bm.allocate("b", 1) == [2]
    assert not bm.can_allocate("b", 5) and bm.can_allocate("b", 4)
    with pytest.raises(MemoryError, match="3 blocks needed, 1 free"):
        bm.allocate("c", 6)
    assert bm.slots("a", 1, 3).tolist() == [1, 2]
    assert bm.free("a") == 2 and bm.num_free == 3
    assert bm.allocate("c", 4) == [0, 1]  # freed blocks are reused
