"""AdamW whose update is built from Paddle elementwise ops instead of the fused CPU kernel.

Paddle 3.3's fused CPU ``adamw_`` kernel leaves the process in a state where every later
multi-threaded matmul runs 4-5x slower (``benchmarks/cpu_adam_slowdown.py`` reproduces it;
SGD and plain elementwise ops do not). This subclass keeps Paddle's ``AdamW`` in every other
respect — accumulators (so ``state_dict``/``set_state_dict`` and checkpoints are unchanged),
learning-rate schedulers, gradient clipping, ``apply_decay_param_fun``, parameter groups —
and replaces only the per-parameter update with the same formula as the fused kernel:

    p      <- p * (1 - lr * ratio * wd)                   (decoupled weight decay)
    m      <- b1 * m + (1 - b1) * g
    v      <- b2 * v + (1 - b2) * g^2
    lr_t    = lr * ratio * sqrt(1 - b2^t) / (1 - b1^t)
    p      <- p - lr_t * m / (sqrt(v) + eps * sqrt(1 - b2^t))
    b1^t, b2^t <- b1^t * b1, b2^t * b2

``lr_ratio`` (a function of the parameter, e.g. LoRA+'s larger rate for B) works on CPU
here, where Paddle's fused kernel refuses it.
"""
from __future__ import annotations

import math

import paddle
from paddle.framework import in_dynamic_mode


class ElementwiseAdamW(paddle.optimizer.AdamW):
    """``paddle.optimizer.AdamW`` with an elementwise-op update (dygraph, float32 params)."""

    def __init__(self, *args, lr_ratio=None, **kwargs):
        super().__init__(*args, **kwargs)
        # set after construction: the base class refuses ``lr_ratio`` on CPU
        self._lr_ratio = lr_ratio

    def _append_optimize_op(self, block, param_and_grad):
        if not in_dynamic_mode() or self._multi_precision or self._amsgrad:
            return super()._append_optimize_op(block, param_and_grad)
        if isinstance(param_and_grad, dict):
            param_and_grad = self._update_param_group(param_and_grad)
        param, grad = param_and_grad
        moment1 = self._get_accumulator_master(self._moment1_acc_str, param)
        moment2 = self._get_accumulator_master(self._moment2_acc_str, param)
        beta1_pow = self._get_accumulator_master(self._beta1_pow_acc_str, param)
        beta2_pow = self._get_accumulator_master(self._beta2_pow_acc_str, param)
        beta1, beta2 = float(self._beta1), float(self._beta2)
        ratio = 1.0 if self._lr_ratio is None else float(self._lr_ratio(param))
        lr = self._create_param_lr(param_and_grad).item() * ratio
        with_decay = self._apply_decay_param_fun is None or self._apply_decay_param_fun(param.name)
        b1t, b2t = beta1_pow.item(), beta2_pow.item()
        with paddle.no_grad():
            if with_decay and self._weight_decay:
                param.scale_(1.0 - lr * float(self._weight_decay))
            moment1.scale_(beta1).add_(grad * (1.0 - beta1))
            moment2.scale_(beta2).add_(grad * grad * (1.0 - beta2))
            bias2 = math.sqrt(1.0 - b2t)
            step = lr * bias2 / (1.0 - b1t)
            param.subtract_(moment1 / (moment2.sqrt() + self._epsilon * bias2) * step)
            beta1_pow.scale_(beta1)
            beta2_pow.scale_(beta2)
        return None
