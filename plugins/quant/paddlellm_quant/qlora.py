"""QLoRA support: a weight-only quantized layer as the frozen base of a LoRA adapter.

The PEFT plugin asks ``wrap_base_layer_for_adapter(layer, adapter_name, method)`` before it
wraps a layer; for this plugin's quantized layers the answer is the layer itself with its
float parameters (bias) frozen, so the adapter trains on top of integer weights that never
change (they are buffers, never parameters).
"""
from __future__ import annotations


def frozen_base(layer):
    for p in layer.parameters():
        p.stop_gradient = True
    return layer
