"""A NumPy float64 attention reference and a conformance check for kernel plugins.

``numpy_attention`` spells out the :class:`paddlellm.interfaces.AttentionKernel` contract in
the plainest way; ``check_kernel`` runs a kernel on every case it claims to support and
compares it with that reference (``llm kernels check NAME``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..interfaces import AttentionSpec


def numpy_attention(q, k, v, *, causal=True, attention_mask=None, sliding_window=None,
                    alibi_slopes=None, segment_ids=None, scale=None, softcap=None) -> np.ndarray:
    """float64 attention. ``q (B, Tq, Hq, D)``, ``k``/``v`` ``(B, Tk, Hkv, D)`` -> ``(B, Tq, Hq, D)``."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    batch, q_len, q_heads, head_dim = q.shape
    k_len, kv_heads = k.shape[1], k.shape[2]
    groups = q_heads // kv_heads
    scale = head_dim ** -0.5 if scale is None else scale
    k = np.repeat(k, groups, axis=2)  # (B, Tk, Hq, D)
    v = np.repeat(v, groups, axis=2)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) * scale  # (B, Hq, Tq, Tk)
    if softcap:
        scores = softcap * np.tanh(scores / softcap)
    p = np.arange(q_len)[:, None] + (k_len - q_len)  # (Tq, 1) key index of each query
    j = np.arange(k_len)[None, :]  # (1, Tk)
    if alibi_slopes is not None:
        scores = scores + np.asarray(alibi_slopes, np.float64)[None, :, None, None] * (j - p)
    visible = np.ones((batch, q_len, k_len), dtype=bool)
    if causal:
        visible &= j <= p
    if sliding_window is not None:
        visible &= (p - j) < sliding_window
    if attention_mask is not None:
        visible &= np.asarray(attention_mask).astype(bool)[:, None, :]
    if segment_ids is not None:
        seg = np.asarray(segment_ids)
        visible &= seg[:, k_len - q_len:, None] == seg[:, None, :]
    scores = np.where(visible[:, None], scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.exp(scores - row_max)
    denom = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, denom, out=np.zeros_like(weights), where=denom > 0)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


@dataclass(frozen=True)
class Case:
    """One conformance case: shapes plus which features are on."""

    name: str
    spec: AttentionSpec
    batch: int = 2
    q_len: int = 7
    k_len: int = 7
    q_heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16


def conformance_cases() -> list[Case]:
    base = AttentionSpec(dtype="float32", head_dim=16)
    return [
        Case("causal", base),
        Case("bidirectional", replace(base, causal=False)),
        Case("multi-head", base, q_heads=4, kv_heads=4),
        Case("multi-query", base, q_heads=4, kv_heads=1),
        Case("padding", replace(base, padding_mask=True)),
        Case("sliding-window", replace(base, sliding_window=True)),
        Case("alibi", replace(base, alibi=True)),
        Case("packed-segments", replace(base, segments=True)),
        Case("softcap", replace(base, softcap=True)),
        Case("decode-with-cache", replace(base, cache="contiguous", padding_mask=True),
             q_len=1, k_len=9),
        Case("chunk-with-cache", replace(base, cache="contiguous"), q_len=3, k_len=9),
        # paged (serving engine): sequence b of the batch has k_len - b keys (ragged), blocks
        # of 4 slots allocated interleaved, all new tokens in one flattened row
        Case("paged-decode", replace(base, cache="paged"), batch=3, q_len=1, k_len=11),
        Case("paged-prefill", replace(base, cache="paged"), batch=2, q_len=7, k_len=7),
        Case("paged-chunk", replace(base, cache="paged"), batch=3, q_len=3, k_len=10),
        Case("paged-window", replace(base, cache="paged", sliding_window=True), batch=2,
             q_len=2, k_len=9),
        Case("paged-softcap", replace(base, cache="paged", softcap=True), batch=2, q_len=1,
             k_len=6),
        Case("paged-mqa-long", replace(base, cache="paged"), batch=2, q_len=1, k_len=70,
             q_heads=8, kv_heads=1, head_dim=40),
        # prefills longer than a kernel's query blocks (and not a multiple of them), after a
        # cached prefix, at the head sizes of real models
        Case("paged-long-prefill", replace(base, cache="paged", head_dim=64), batch=2, q_len=37,
             k_len=45, q_heads=8, kv_heads=2, head_dim=64),
        Case("paged-long-window", replace(base, cache="paged", head_dim=32, sliding_window=True,
                                          softcap=True), batch=2, q_len=33, k_len=40,
             q_heads=4, kv_heads=2, head_dim=32),
    ]


def case_inputs(case: Case, seed: int = 0) -> dict[str, Any]:
    """Random NumPy inputs for ``case`` (float32), with the masks its spec asks for."""
    rng = np.random.default_rng(seed)
    b, tq, tk = case.batch, case.q_len, case.k_len
    spec = case.spec
    out: dict[str, Any] = {
        "q": rng.standard_normal((b, tq, case.q_heads, case.head_dim)).astype(np.float32),
        "k": rng.standard_normal((b, tk, case.kv_heads, case.head_dim)).astype(np.float32),
        "v": rng.standard_normal((b, tk, case.kv_heads, case.head_dim)).astype(np.float32),
        "causal": spec.causal,
    }
    if spec.padding_mask:  # left padding on the second row
        mask = np.ones((b, tk), dtype=np.int64)
        mask[-1, : min(3, tk - 1)] = 0
        out["attention_mask"] = mask
    if spec.sliding_window:
        out["sliding_window"] = 3
    if spec.alibi:
        out["alibi_slopes"] = (2.0 ** -np.arange(1, case.q_heads + 1)).astype(np.float32)
    if spec.segments:
        seg = np.zeros((b, tk), dtype=np.int64)
        seg[:, tk // 3:] = 1
        seg[:, 2 * tk // 3:] = 2
        out["segment_ids"] = seg
    if spec.softcap:
        out["softcap"] = 2.0
    return out


@dataclass
class CheckResult:
    case: str
    supported: bool
    rel_error: float | None = None
    passed: bool | None = None
    error: str | None = None


def _paged_lengths(case: Case) -> tuple[list[int], list[int]]:
    """(context length, query length) of each sequence of a paged case (ragged)."""
    ctx = [case.k_len - b for b in range(case.batch)]
    return ctx, [min(case.q_len, c) for c in ctx]


def expected_output(case: Case, inputs: dict[str, Any]) -> np.ndarray:
    """The float64 answer for ``case``: paged cases give their sequences' new tokens in one row
    ``(1, sum of query lengths, Hq, D)``."""
    if case.spec.cache != "paged":
        return numpy_attention(**inputs)
    rest = {k: v for k, v in inputs.items() if k not in ("q", "k", "v")}
    outs = []
    for b, (ctx, ql) in enumerate(zip(*_paged_lengths(case))):
        start = case.k_len - ctx
        outs.append(numpy_attention(inputs["q"][b:b + 1, case.q_len - ql:],
                                    inputs["k"][b:b + 1, start:], inputs["v"][b:b + 1, start:],
                                    **rest)[0])
    return np.concatenate(outs)[None]


def _run_paged(kernel: Any, case: Case, q, k, v, extra: dict[str, Any]):
    """Write each sequence's cached keys into a paged pool, then run the new tokens."""
    import paddle

    from ..modeling.kv_manager import PagedKVCache

    block = 4
    ctx, q_lens = _paged_lengths(case)
    cache = PagedKVCache(1, sum(-(-c // block) for c in ctx) + 2, block, case.kv_heads,
                         case.head_dim)
    ids = [f"s{b}" for b in range(case.batch)]
    for upto in range(block, max(ctx) + block, block):  # interleave the sequences' blocks
        for sid, c in zip(ids, ctx):
            cache.blocks.allocate(sid, min(upto, c))
    cached = [c - n for c, n in zip(ctx, q_lens)]
    starts = [case.k_len - c for c in ctx]
    if any(cached):
        keep = [c for c in range(case.batch) if cached[c]]
        pre = cache.batch([ids[b] for b in keep], [0] * len(keep), [cached[b] for b in keep])
        pre[0].write(paddle.concat([k[b:b + 1, starts[b]:starts[b] + cached[b]] for b in keep], 1),
                     paddle.concat([v[b:b + 1, starts[b]:starts[b] + cached[b]] for b in keep], 1))
    new = lambda x, b: x[b:b + 1, x.shape[1] - q_lens[b]:]  # noqa: E731
    call = cache.batch(ids, cached, q_lens)
    rows = [paddle.concat([new(x, b) for b in range(case.batch)], 1) for x in (q, k, v)]
    return kernel(*rows, cache=call[0], **extra)


def run_kernel_case(kernel: Any, case: Case, inputs: dict[str, Any]) -> np.ndarray:
    """Run ``kernel`` on NumPy ``inputs``; cache cases prefill the cache first."""
    import paddle

    from ..modeling.kv_cache import LayerKVCache

    t = {key: paddle.to_tensor(val) if isinstance(val, np.ndarray) else val
         for key, val in inputs.items()}
    q, k, v = t.pop("q"), t.pop("k"), t.pop("v")
    if case.spec.cache == "paged":
        return _run_paged(kernel, case, q, k, v, t).numpy()
    if case.spec.cache == "none":
        return kernel(q, k, v, **t).numpy()
    cache = LayerKVCache(case.batch, case.k_len + 4, case.kv_heads, case.head_dim)
    prefix = case.k_len - case.q_len
    cache.update(k[:, :prefix], v[:, :prefix])
    return kernel(q, k[:, prefix:], v[:, prefix:], cache=cache, **t).numpy()


def check_kernel(kernel: Any, tolerance: float = 1e-5) -> list[CheckResult]:
    """Compare ``kernel`` with :func:`numpy_attention` on every supported case.

    ``tolerance`` bounds ``max|out - ref| / max|ref|``.
    """
    results = []
    for case in conformance_cases():
        if not kernel.supports(case.spec):
            results.append(CheckResult(case.name, supported=False))
            continue
        inputs = case_inputs(case)
        expected = expected_output(case, inputs)
        try:
            got = run_kernel_case(kernel, case, inputs)
        except Exception as exc:  # a kernel that claims support must not raise
            results.append(CheckResult(case.name, True, passed=False, error=repr(exc)))
            continue
        err = float(np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max())
        results.append(CheckResult(case.name, True, err, err <= tolerance))
    return results
