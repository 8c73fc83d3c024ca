"""The single-device strategy drives a real training loop."""
from __future__ import annotations

import numpy as np
import paddle

from paddlellm.plugin.manager import PluginManager


def test_single_strategy_trains_a_model_on_one_device():
    manager = PluginManager()
    backend = manager.select_backend(None).load()
    backend.setup()
    strategy = manager.registry.load("trainer_strategy", "single")(None)
    strategy.setup(backend)
    assert (strategy.world_size, strategy.rank, strategy.is_main_process) == (1, 0, True)
    assert strategy.shard(list(range(5))) == [0, 1, 2, 3, 4]
    assert strategy.all_reduce_mean(2.5) == 2.5

    paddle.seed(0)
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((64, 4)).astype(np.float32))
    y = x @ paddle.to_tensor(np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32))
    model = strategy.wrap_model(paddle.nn.Linear(4, 1))
    opt = strategy.wrap_optimizer(paddle.optimizer.AdamW(0.05, parameters=model.parameters()))
    losses = []
    for _ in range(60):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0]
