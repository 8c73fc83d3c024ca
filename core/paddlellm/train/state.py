"""Optimizer and scheduler state in a checkpoint, independent of Paddle's parameter names.

Paddle keys optimizer accumulators by generated parameter names (``linear_3.w_0_moment1_0``)
that depend on construction order; a resumed run (or another process) generates others.
We store them under the model's structural names (``model.layers.0.mlp.up_proj.weight``)
and map back on load.
"""
from __future__ import annotations

import json
from pathlib import Path

import paddle

OPTIMIZER_FILE = "optimizer.pdopt"
SCHEDULER_FILE = "scheduler.json"
STATE_FILE = "trainer_state.json"


def _renamer(model: paddle.nn.Layer, to_structural: bool) -> dict[str, str]:
    pairs = [(p.name, n) for n, p in model.named_parameters()]
    return dict(pairs) if to_structural else {n: pname for pname, n in pairs}


def _rename_key(key: str, mapping: dict[str, str]) -> str:
    # accumulator keys are "<param name>_<accumulator>_<i>"; match the longest prefix
    best = max((k for k in mapping if key.startswith(k + "_")), key=len, default=None)
    return key if best is None else mapping[best] + key[len(best):]


def save_training_state(directory: str | Path, model: paddle.nn.Layer, optimizer,
                        scheduler) -> None:
    directory = Path(directory)
    mapping = _renamer(model, to_structural=True)
    state = {_rename_key(k, mapping): v for k, v in optimizer.state_dict().items()
             if k != "LR_Scheduler"}
    paddle.save(state, str(directory / OPTIMIZER_FILE))
    (directory / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict()))


def load_training_state(directory: str | Path, model: paddle.nn.Layer, optimizer,
                        scheduler) -> dict:
    """Restore optimizer and scheduler from ``directory``; return its trainer state."""
    directory = Path(directory)
    mapping = _renamer(model, to_structural=False)
    saved = paddle.load(str(directory / OPTIMIZER_FILE))
    optimizer.set_state_dict({_rename_key(k, mapping): v for k, v in saved.items()})
    scheduler.set_state_dict(json.loads((directory / SCHEDULER_FILE).read_text()))
    return json.loads((directory / STATE_FILE).read_text())
