"""Worker for the multi-process tests: trains a tiny decoder under one strategy and saves
what it computed (losses, logits, weights) for the test to compare with one process.

    python dist_worker.py STRATEGY OUT_DIR         (single)
    python -m paddle.distributed.launch --nproc_per_node 2 dist_worker.py STRATEGY OUT_DIR [TP_DEGREE]

Fixed data: EXAMPLES sequences; optimizer step ``i`` of the whole job consumes examples
``[i*GLOBAL_BATCH, (i+1)*GLOBAL_BATCH)``, whatever the number of data-parallel processes.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from paddlellm.api import AutoModelForCausalLM  # noqa: E402
from paddlellm.plugin.manager import PluginManager  # noqa: E402
from paddlellm.training.loss import causal_lm_loss  # noqa: E402

VOCAB, LENGTH, GLOBAL_BATCH, STEPS = 64, 16, 4, 3
EXAMPLES = GLOBAL_BATCH * STEPS


def build(seed: int = 0):
    paddle.seed(seed)
    return AutoModelForCausalLM.from_config("llama-tiny", vocab_size=VOCAB)


def full_weights(strategy, model) -> dict[str, np.ndarray]:
    if hasattr(strategy, "full_state_dict"):
        state = strategy.full_state_dict(model)
    else:
        state = model.state_dict()
    return {k: np.asarray(v.numpy()) for k, v in state.items()}


def train(strategy, data: np.ndarray, optimizer_name: str):
    """``STEPS`` optimizer steps; returns (per-step global losses, full weights)."""
    model = strategy.wrap_model(build())
    params = model.parameters()
    opt = (paddle.optimizer.SGD(0.5, parameters=params) if optimizer_name == "sgd"
           else paddle.optimizer.AdamW(1e-2, parameters=params, weight_decay=0.01,
                                       grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0)))
    opt = strategy.wrap_optimizer(opt)
    mine = strategy.shard(list(range(EXAMPLES)))  # this process's examples
    per_process = GLOBAL_BATCH // strategy.world_size
    losses = []
    for step in range(STEPS):
        index = mine[step * per_process:(step + 1) * per_process]
        ids = paddle.to_tensor(data[index])  # (b, T)
        loss, _ = causal_lm_loss(model(ids), ids)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(strategy.all_reduce_mean(float(loss)))
    return np.asarray(losses), full_weights(strategy, model)


def main(name: str, out: str, tp_degree: str | None = None) -> None:
    manager = PluginManager()
    backend = manager.select_backend(None).load()
    backend.setup()
    factory = manager.registry.load("trainer_strategy", name)
    options = (factory.config_class(tensor_parallel_degree=int(tp_degree)) if tp_degree else None)
    strategy = factory(options)
    strategy.setup(backend)
    data = np.random.default_rng(0).integers(0, VOCAB, (EXAMPLES, LENGTH))  # (N, T)
    result: dict[str, np.ndarray] = {}

    model = strategy.wrap_model(build())
    # parameter names (optimizer-state keys on disk) are the unwrapped model's
    result["names"] = np.asarray([n for n, _ in model.named_parameters()])
    result.update({f"init/{k}": v for k, v in full_weights(strategy, model).items()})
    with paddle.no_grad():
        result["logits"] = np.asarray(model(paddle.to_tensor(data[:2])).numpy())  # (2, T, V)
    for optimizer_name in ("sgd", "adamw"):
        losses, weights = train(strategy, data, optimizer_name)
        result[f"{optimizer_name}_losses"] = losses
        result.update({f"{optimizer_name}/{k}": v for k, v in weights.items()})
    if name == "tensor_parallel":  # a one-process save of split weights is refused
        from paddlellm_strategies.tensor_parallel import CollectiveSaveError

        try:
            model.save_pretrained(os.path.join(out, "refused"))
        except CollectiveSaveError:
            result["save_refused"] = np.ones(1)
    if hasattr(strategy, "save_pretrained"):  # collective: every process calls it
        strategy.save_pretrained(model, os.path.join(out, "checkpoint"))
    if strategy.is_main_process:
        np.savez(os.path.join(out, f"{name}.npz"), **result)


if __name__ == "__main__":
    main(*sys.argv[1:])
