"""An attention kernel on ``paddle.nn.functional.scaled_dot_product_attention``.

It claims only what that function does exactly: plain causal or bidirectional attention
over equal-length queries and keys (grouped heads included), no masks, no cache. For every
other call ``supports()`` says no and paddlellm picks another kernel.
"""
from __future__ import annotations

import paddle.nn.functional as F

from paddlellm.api import AttentionSpec


class SDPAKernel:
    name = "sdpa-example"
    backends = ("*",)
    priority = -10

    def supports(self, spec: AttentionSpec) -> bool:
        plain = not (spec.padding_mask or spec.sliding_window or spec.alibi or spec.segments
                     or spec.softcap)
        return plain and spec.cache == "none" and spec.dtype == "float32"

    def __call__(self, q, k, v, *, causal=True, scale=None, cache=None, **unsupported):
        if cache is not None or scale is not None or any(v is not None for v in unsupported.values()):
            raise ValueError("sdpa-example supports only plain causal/bidirectional attention")
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, T, Hq, D)


kernel = SDPAKernel()
