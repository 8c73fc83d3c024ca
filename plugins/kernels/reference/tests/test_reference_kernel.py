"""The reference attention kernel against a NumPy float64 reference."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm.interfaces import AttentionSpec
from paddlellm.api import LayerKVCache
from paddlellm.testing.attention import (case_inputs, check_kernel, conformance_cases, expected_output,
                                         numpy_attention, run_kernel_case)
from paddlellm_kernels_reference.kernel import kernel

pd = paddle.to_tensor


def rel_err(got, ref):
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("case", conformance_cases(), ids=lambda c: c.name)
def test_every_feature_matches_float64_reference(case):
    inputs = case_inputs(case, seed=1)
    assert rel_err(run_kernel_case(kernel, case, inputs), expected_output(case, inputs)) < 1e-5


def test_combined_masks_on_odd_shapes():
    rng = np.random.default_rng(3)
    b, tq, tk, hq, hkv, d = 3, 11, 11, 6, 3, 8
    q = rng.standard_normal((b, tq, hq, d)).astype(np.float32)
    k = rng.standard_normal((b, tk, hkv, d)).astype(np.float32)
    v = rng.standard_normal((b, tk, hkv, d)).astype(np.float32)
    mask = np.ones((b, tk), np.int64)
    mask[0, :4] = 0
    seg = np.repeat(np.array([[0] * 5 + [1] * 6]), b, axis=0)
    slopes = np.linspace(0.1, 0.9, hq).astype(np.float32)
    kwargs = dict(attention_mask=mask, sliding_window=4, segment_ids=seg, alibi_slopes=slopes,
                  scale=0.3, softcap=5.0)
    got = kernel(pd(q), pd(k), pd(v), **{k_: pd(v_) if isinstance(v_, np.ndarray) else v_
                                         for k_, v_ in kwargs.items()})
    assert rel_err(got.numpy(), numpy_attention(q, k, v, **kwargs)) < 1e-5


def test_query_that_sees_no_key_returns_zeros():
    q = pd(np.ones((1, 2, 2, 4), np.float32))
    k = pd(np.ones((1, 2, 2, 4), np.float32))
    out = kernel(q, k, k, attention_mask=pd(np.array([[0, 1]])), causal=True).numpy()
    assert np.all(out[0, 0] == 0) and np.all(np.isfinite(out))


def test_decoding_token_by_token_with_cache_equals_full_attention():
    rng = np.random.default_rng(4)
    b, t, hq, hkv, d = 2, 6, 4, 2, 8
    q, k, v = (rng.standard_normal((b, t, h, d)).astype(np.float32) for h in (hq, hkv, hkv))
    full = kernel(pd(q), pd(k), pd(v), causal=True).numpy()
    cache = LayerKVCache(b, t, hkv, d)
    steps = [kernel(pd(q[:, :3]), pd(k[:, :3]), pd(v[:, :3]), cache=cache).numpy()]
    for i in range(3, t):
        steps.append(kernel(pd(q[:, i:i + 1]), pd(k[:, i:i + 1]), pd(v[:, i:i + 1]),
                            cache=cache).numpy())
    assert len(cache) == t
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences_in_float64():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((1, 4, 2, 4))
    k = rng.standard_normal((1, 4, 1, 4))
    v = rng.standard_normal((1, 4, 1, 4))
    w = rng.standard_normal((1, 4, 2, 4))  # loss = sum(out * w)
    tq = paddle.to_tensor(q, stop_gradient=False)
    loss = (kernel(tq, pd(k), pd(v), sliding_window=2) * pd(w)).sum()
    loss.backward()
    eps, numeric = 1e-6, np.zeros_like(q)
    for idx in np.ndindex(q.shape):
        plus, minus = q.copy(), q.copy()
        plus[idx] += eps
        minus[idx] -= eps
        f = lambda x: float((numpy_attention(x, k, v, sliding_window=2) * w).sum())
        numeric[idx] = (f(plus) - f(minus)) / (2 * eps)
    np.testing.assert_allclose(tq.grad.numpy(), numeric, rtol=1e-5, atol=1e-7)


def test_supports_and_conformance_summary():
    assert kernel.supports(AttentionSpec(cache="contiguous"))
    assert kernel.supports(AttentionSpec(cache="paged"))  # the engine's paged path
    assert not kernel.supports(AttentionSpec(cache="paged", padding_mask=True))
    results = check_kernel(kernel)
    assert all(r.supported and r.passed for r in results), results


def test_rejects_heads_that_do_not_group():
    x = pd(np.zeros((1, 2, 3, 4), np.float32))
    y = pd(np.zeros((1, 2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="multiple of kv heads"):
        kernel(x, y, y)
