"""Training components that need no model: schedules, checkpoints, metrics, data."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from paddlellm.data.demo import FACTS, demo_examples
from paddlellm.data.lm import block_batches, pack_documents
from paddlellm.errors import DataFormatError
from paddlellm.data.textfile import read_text_documents
from paddlellm.training.checkpointing import list_checkpoints, save_checkpoint
from paddlellm.training.metrics import MetricsLogger
from paddlellm.training.optim import lr_factor


def test_lr_schedules_warm_up_then_decay():
    f = lambda s, kind: lr_factor(s, warmup_steps=4, total_steps=14, kind=kind)
    assert [f(s, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4, "linear") == 1.0 and f(9, "linear") == pytest.approx(0.5)
    assert f(14, "linear") == 0.0
    assert f(9, "cosine") == pytest.approx(0.5) and f(14, "cosine") == pytest.approx(0.0)
    assert f(6, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert f(13, "constant") == 1.0


def test_checkpoints_are_atomic_and_only_the_newest_are_kept(tmp_path):
    def write(d):
        (tmp_path / "written").write_text(d)
        open(f"{d}/weights.bin", "w").write("x")

    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, write, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-20", "checkpoint-30"]
    assert ".tmp-checkpoint-30" in (tmp_path / "written").read_text()  # written aside first
    assert json.loads((tmp_path / "checkpoint-30" / "trainer_state.json").read_text())["step"] == 30

    def crash(d):
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 40, crash, {"step": 40}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-20", "checkpoint-30"]


def test_metrics_are_jsonl_and_printed_off_terminal(tmp_path, capsys):
    import sys

    logger = MetricsLogger(tmp_path / "m" / "metrics.jsonl", stream=sys.stdout)
    logger.start(2)
    logger.log({"step": 1, "loss": 2.5, "lr": 1e-3})
    logger.finish()
    lines = (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["loss"] == 2.5
    assert "step=1 loss=2.5 lr=1.000e-03" in capsys.readouterr().out
    MetricsLogger(tmp_path / "off.jsonl", enabled=False).log({"x": 1})
    assert not (tmp_path / "off.jsonl").exists()


def test_demo_splits_never_share_a_question_and_answers_are_right():
    train = demo_examples(2000, split="train")
    held = demo_examples(300, split="eval")
    shared = {e["src"] for e in train} & {e["src"] for e in held}
    assert all(q.startswith(("What colour", "What comes after")) for q in shared)
    for e in held:
        words = e["src"].split()
        if e["task"] == "reverse":
            assert e["tgt"].split() == words[1:][::-1]
        elif e["task"] == "sort":
            assert e["tgt"].split() == sorted(words[1:])
        elif e["task"] == "count":
            assert int(e["tgt"]) == len(words) - 1
        elif e["task"] == "fact":
            assert e["tgt"] == FACTS[words[-1].rstrip("?")]
    assert {e["task"] for e in held} == {"copy", "reverse", "sort", "count", "next", "fact"}
    assert demo_examples(50, split="eval") == demo_examples(50, split="eval")
    with pytest.raises(ValueError, match="split"):
        demo_examples(1, split="test")


def test_packing_documents_into_blocks_and_batches():
    blocks = pack_documents([[1, 2, 3], [4, 5], [6]], 3, eos_id=0)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5], [0, 6, 0]]
    tail = pack_documents([[1, 2, 3, 4]], 3, eos_id=9, drop_last=False)
    assert tail.tolist() == [[1, 2, 3], [4, 9, 9]]
    with pytest.raises(ValueError, match="not enough tokens"):
        pack_documents([[1]], 8, eos_id=0)
    it = block_batches(np.arange(12).reshape(6, 2), 2, seed=0, shard=[0, 1, 2, 3])
    seen = {int(r[0]) for _ in range(2) for r in next(it)["input_ids"]}
    assert seen == {0, 2, 4, 6}  # one epoch of the shard: rows 0-3 only


def test_text_data_errors_name_file_and_line(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text('{"text": "a b"}\n\n{"text": "c"}\n')
    assert read_text_documents(good) == ["a b", "c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: expected an object"):
        read_text_documents(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataFormatError, match=r"broken.jsonl:2: not valid JSON"):
        read_text_documents(broken)
    with pytest.raises(DataFormatError, match="not found"):
        read_text_documents(tmp_path / "none.txt")
