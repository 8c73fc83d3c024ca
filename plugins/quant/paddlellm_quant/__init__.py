"""Quantizers (weight-only, GPTQ, AWQ, SmoothQuant, KV int8, FP8) for paddlellm."""
