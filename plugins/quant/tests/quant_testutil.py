"""Helpers of the quantization tests (imported by name: conftest puts this folder on sys.path)."""
from __future__ import annotations

from pathlib import Path

import paddle

import paddlellm

DEMO = Path(paddlellm.__file__).parent / "assets" / "qwen-demo"
OUTLIER_CHANNELS = [5, 37, 70, 101]


def load_demo(**kwargs):
    return paddlellm.AutoModelForCausalLM.from_pretrained(DEMO, **kwargs)


def with_outlier_channels(model, factor: float = 20.0):
    """Exact reparametrisation giving LLM-like activation outliers: a few channels of every
    RMSNorm weight times ``factor``, the matching input rows of the next linears divided by it."""
    with paddle.no_grad():
        for layer in model.model.layers:
            groups = [(layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj,
                                               layer.self_attn.v_proj]),
                      (layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj])]
            for norm, linears in groups:
                w = norm.weight.numpy()
                w[OUTLIER_CHANNELS] *= factor
                norm.weight.set_value(paddle.to_tensor(w))
                for lin in linears:  # Paddle's (in, out): rows are input channels
                    w = lin.weight.numpy()
                    w[OUTLIER_CHANNELS] /= factor
                    lin.weight.set_value(paddle.to_tensor(w))
    return model
