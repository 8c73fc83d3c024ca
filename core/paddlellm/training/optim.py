"""AdamW with warmup + linear/cosine/constant decay and global-norm gradient clipping."""
from __future__ import annotations

import math

import paddle

from .adamw import ElementwiseAdamW

NO_DECAY_HINTS = ("bias", "norm", "ln_", "layernorm")


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)  # linear


def warmup_steps_for(config, total_steps: int) -> int:
    return config.warmup_steps or int(round(config.warmup_ratio * total_steps))


def build_optimizer(model: paddle.nn.Layer, config, total_steps: int):
    """``(optimizer, scheduler)`` for the trainable parameters of ``model``.

    Weight decay skips biases and normalisation weights, as is usual for LLMs.
    """
    warmup = warmup_steps_for(config, total_steps)
    scheduler = paddle.optimizer.lr.LambdaDecay(
        learning_rate=config.learning_rate,
        lr_lambda=lambda step: lr_factor(step, warmup_steps=warmup, total_steps=total_steps,
                                         kind=config.lr_scheduler_type))
    params = [p for p in model.parameters() if not p.stop_gradient]
    decay = {p.name for n, p in model.named_parameters()
             if not p.stop_gradient and not any(h in n.lower() for h in NO_DECAY_HINTS)}
    clip = paddle.nn.ClipGradByGlobalNorm(config.max_grad_norm) if config.max_grad_norm else None
    # On CPU, Paddle's fused AdamW kernel slows every later matmul 4-5x (see adamw.py).
    adamw = ElementwiseAdamW if paddle.get_device().startswith("cpu") else paddle.optimizer.AdamW
    optimizer = adamw(
        learning_rate=scheduler, parameters=params, beta1=config.adam_beta1,
        beta2=config.adam_beta2, epsilon=config.adam_epsilon, weight_decay=config.weight_decay,
        apply_decay_param_fun=lambda name: name in decay, grad_clip=clip)
    return optimizer, scheduler
