"""Helpers of the prefix/LoKr/VeRA tests (imported by name: conftest puts this folder on
sys.path): the peft-made fixtures in ``fixtures/others`` and a short SFT run via ``llm run``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle

from helpers import run_cli
from paddlellm.api import AutoModelForCausalLM
from paddlellm.modeling.peft import disable_adapters, merge_adapter, unmerge_adapter

FIX = Path(__file__).parent / "fixtures" / "others"
REF = dict(np.load(FIX / "reference.npz"))
TOL = 1e-5


def base():
    return AutoModelForCausalLM.from_pretrained(FIX / "base").eval()


def logits(model) -> np.ndarray:
    return model(REF["ids"]).numpy()


def batch_logits(model) -> np.ndarray:
    """Logits of the left-padded reference batch."""
    return model(paddle.to_tensor(REF["batch_ids"]),
                 attention_mask=paddle.to_tensor(REF["batch_mask"]),
                 position_ids=paddle.to_tensor(REF["batch_pos"])).numpy()


def randomize_trainable(model, rng: np.random.Generator) -> None:
    """Every trainable tensor drawn from N(0, 0.3): random and nonzero, as after training."""
    for p in model.parameters():
        if not p.stop_gradient:
            p.set_value(rng.normal(0, 0.3, p.shape).astype("float32"))


def check_peft_logits(model, method: str) -> None:
    """The adapted ``model`` gives peft's logits (``REF[f"{method}_logits"]``, and on the real
    tokens of the padded batch), and the base model's with adapters disabled."""
    assert np.abs(logits(model) - REF[f"{method}_logits"]).max() <= TOL
    real = REF["batch_mask"].astype(bool)
    assert np.abs(batch_logits(model) - REF[f"{method}_batch_logits"])[real].max() <= TOL
    with disable_adapters(model):
        assert np.abs(logits(model) - REF["base_logits"]).max() <= TOL


def check_merge_roundtrip(model, layer_class: type) -> None:
    """On an adapted ``model``: an in-place merge keeps the logits (and gives the base's with
    adapters disabled), ``unmerge`` restores the base weights, and a merge with unload leaves
    no ``layer_class`` layer and the same logits."""
    before = {n: p.numpy().copy() for n, p in model.named_parameters() if "base_layer" in n}
    want = logits(model)
    merge_adapter(model, unload=False)  # in place: the layers stay
    assert np.abs(logits(model) - want).max() <= TOL
    with disable_adapters(model):  # switched off while merged: the base output
        assert np.abs(logits(model) - REF["base_logits"]).max() <= TOL
    unmerge_adapter(model)
    after = {n: p.numpy() for n, p in model.named_parameters() if "base_layer" in n}
    assert max(np.abs(after[n] - before[n]).max() for n in before) <= 1e-6
    merged = merge_adapter(model)  # unload: plain Linear layers, a normal checkpoint
    assert not any(isinstance(l, layer_class) for _, l in merged.named_sublayers())
    assert np.abs(logits(merged) - want).max() <= TOL


def sft_run(tmp_path: Path, *options: str) -> tuple[Path, dict]:
    """``llm run --model qwen --stage sft`` for 6 steps (batch 4) on 32 demo examples with
    ``options`` (``--peft ...``, ``--learning_rate``); asserts it succeeded and lowered the
    loss on 4 held-out examples by 10 %. Returns the output directory and its run summary."""
    from paddlellm.api import demo_examples

    rows = demo_examples(36, split="train", seed=3)
    data, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    for path, part in ((data, rows[:32]), (dev, rows[32:])):
        path.write_text("".join(json.dumps({"src": r["src"], "tgt": r["tgt"]}) + "\n"
                                for r in part))
    out = tmp_path / "out"
    proc = run_cli("run", "--model", "qwen", "--stage", "sft", *options, "--data", str(data),
                   "--eval_data", str(dev), "--max_steps", "6",
                   "--per_device_train_batch_size", "4", "--max_length", "64",
                   "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["eval_loss_after"] < 0.9 * summary["eval_loss_before"]
    return out, summary
