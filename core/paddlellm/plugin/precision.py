"""Low-precision weights on backends without low-precision kernels (bfloat16/float16 on CPU).

Paddle's CPU build has no bfloat16 or float16 ``matmul`` (and no float16 ``multiply``), so a
model loaded with ``dtype="bfloat16"`` cannot run there as is. :func:`store_low_compute_fp32`
keeps the large matrices — every ``nn.Linear`` and ``nn.Embedding`` weight — in the low
precision (half the memory of float32) and computes in float32: each linear layer upcasts its
weight for the product, each embedding upcasts the rows it gathers, and the small tensors
(norms, biases) become float32. Logits equal float32 inference on the rounded weights.

:func:`needs_upcast` asks the backend whether it computes in a dtype, so where the kernels
exist (GPU) the model stays entirely in low precision.
"""
from __future__ import annotations

from typing import Any

LOW_PRECISION = ("bfloat16", "float16")


def needs_upcast(dtype: str) -> bool:
    """Whether the current backend lacks kernels to run inference in ``dtype``."""
    if dtype not in LOW_PRECISION:
        return False
    import paddle

    if not paddle.get_device().startswith("cpu"):
        try:
            from .manager import get_plugin_manager

            backend = get_plugin_manager().select_backend("auto").load()
            return not backend.supports_dtype(dtype, training=False)
        except Exception:  # no backend information: trust the device
            return False
    return True


def store_low_compute_fp32(model: Any, dtype: str) -> Any:
    """Keep ``nn.Linear``/``nn.Embedding`` weights in ``dtype``; compute in float32."""
    import paddle.nn.functional as F
    from paddle import nn

    if dtype not in LOW_PRECISION:
        raise ValueError(f"storage dtype must be one of {', '.join(LOW_PRECISION)}, got {dtype!r}")

    def linear_forward(layer):
        def forward(x):
            bias = layer.bias
            return F.linear(x, layer.weight.astype(x.dtype), bias)
        return forward

    def embedding_forward(layer):
        def forward(ids):
            return F.embedding(ids, layer.weight, padding_idx=layer._padding_idx).astype("float32")
        return forward

    def to_dtype(layer, name: str, param, target: str) -> None:
        if str(param.dtype).replace("paddle.", "") == target:
            return
        new = layer.create_parameter(shape=list(param.shape), dtype=target,
                                     is_bias=name == "bias")
        new.set_value(param.astype(target))
        new.stop_gradient = param.stop_gradient
        setattr(layer, name, new)

    for layer in model.sublayers(include_self=True):
        for name, param in list(layer._parameters.items()):
            if param is None:
                continue
            matrix = name == "weight" and isinstance(layer, (nn.Linear, nn.Embedding))
            to_dtype(layer, name, param, dtype if matrix else "float32")
        if isinstance(layer, nn.Linear):
            layer.forward = linear_forward(layer)
        elif isinstance(layer, nn.Embedding):
            layer.forward = embedding_forward(layer)
    for name, buf in list(model.named_buffers()):
        if str(buf.dtype).replace("paddle.", "") in LOW_PRECISION:
            owner = model
            *path, leaf = name.split(".")
            for part in path:
                owner = getattr(owner, part)
            owner.register_buffer(leaf, buf.astype("float32"),
                                  persistable=leaf not in owner._non_persistable_buffer_names_set)
    model.compute_dtype = "float32"
    model.storage_dtype = dtype
    return model
