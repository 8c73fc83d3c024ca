"""Training loggers (``--loggers``): TensorBoard event files and VisualDL records that their
libraries' own readers parse back to the logged scalars, a ``loss.png`` that is a whole PNG,
a third-party logger registered through ``register_loggers`` receiving every record, and a
resumed run that continues every logger with each step exactly once."""
from __future__ import annotations

import importlib.util
import json
import struct
import sys
import zlib

import pytest

from helpers import make_fake_distribution, run_cli
from paddlellm.plugin.config import RunConfig, build_run_config
from paddlellm.errors import ConfigError
from paddlellm.loggers import EXTRAS, installed_loggers, scalar_tag
from paddlellm.plugin.manager import PluginManager

TINY = ["--stage", "pretrain", "--max_length", "32", "--per_device_train_batch_size", "4",
        "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "3"]


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _curve(records, key):
    return {r["step"]: r[key] for r in records if key in r}


def _png_size(path):
    """(width, height) of a PNG whose chunks all pass their CRC (a whole file, not a torn one)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    return struct.unpack(">II", data[16:24])


def _tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _visualdl_scalars(folder):
    from visualdl import LogReader

    out: dict[str, list] = {}
    for path in sorted(folder.glob("vdlrecords.*.log")):
        reader = LogReader(file_path=str(path))
        for tag in reader.get_tags().get("scalar", []):
            out.setdefault(tag, []).extend((r.id, r.value) for r in reader.get_data("scalar", tag))
    return {tag: sorted(points) for tag, points in out.items()}


def _same(points, curve):
    """A reader's ``(step, value)`` points are ``curve`` ({step: value}): each step once, in
    order, values equal to float32 precision."""
    assert [step for step, _ in points] == sorted(curve)
    assert dict(points) == pytest.approx(curve, rel=1e-6)


def test_tags_follow_the_trainer_callbacks():
    assert [scalar_tag(k) for k in ("loss", "lr", "eval_loss", "tokens_per_sec", "test_ppl")] \
        == ["train/loss", "train/learning_rate", "eval/loss", "train/tokens_per_sec", "test/ppl"]


def test_loggers_flag_and_paddlenlp_report_to():
    assert build_run_config(overrides=["--loggers", "tensorboard,plot"]).loggers == \
        ["tensorboard", "plot"]
    assert build_run_config(overrides=["--loggers", "jsonl", "plot"]).loggers == ["plot"]
    assert build_run_config(overrides={"report_to": ["visualdl", "tensorboard"],
                                       "logging_dir": "vdl"}).loggers == ["visualdl", "tensorboard"]
    assert build_run_config(overrides={"report_to": "none"}).loggers == []
    assert RunConfig().loggers == [] and RunConfig().logging_dir is None
    registry = PluginManager().registry
    with pytest.raises(Exception, match="unknown logger 'wandb'.*plot.*tensorboard"):
        build_run_config(overrides=["--report_to", "wandb"], registry=registry)
    assert build_run_config(overrides=["--report_to", "all"], registry=registry).loggers == ["all"]
    everything = installed_loggers(registry)  # what "all" builds
    assert "jsonl" not in everything
    for name, (module, _) in EXTRAS.items():
        assert (name in everything) == (importlib.util.find_spec(module) is not None)


def test_a_missing_library_names_the_pip_command(monkeypatch):
    from paddlellm.loggers.tensorboard import TensorBoardLogger

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"--loggers tensorboard: the 'tensorboard' package "
                                          r"is not installed.*pip install 'paddlellm\[tensorboard\]'"):
        TensorBoardLogger()


def test_a_run_writes_event_files_records_and_a_plot_and_resume_continues_them(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("visualdl")
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    loggers = ["--loggers", "tensorboard,visualdl,plot"]
    # the "interrupted" run: 4 steps, its last checkpoint at step 2
    run_cli("run", "--output_dir", str(out), "--max_steps", "4", *TINY, *loggers, check=True)
    records = _records(out)
    loss, lr, eval_loss = (_curve(records, k) for k in ("loss", "lr", "eval_loss"))
    assert sorted(loss) == [1, 2, 3, 4] and sorted(eval_loss) == [0, 3, 4]
    width, height = _png_size(out / "loss.png")
    assert width >= 400 and height >= 300

    tb = _tensorboard_scalars(out / "runs")
    _same(tb["train/loss"], loss)
    _same(tb["train/learning_rate"], lr)
    _same(tb["eval/loss"], eval_loss)
    vdl = _visualdl_scalars(out / "runs")
    _same(vdl["train/loss"], loss)
    _same(vdl["eval/loss"], eval_loss)

    # resumed from checkpoint-2 for 6 steps: steps 3 and 4 are trained (and logged) again
    (out / "loss.png").unlink()
    run_cli("run", "--output_dir", str(out), "--max_steps", "6", *TINY, *loggers,
            "--resume_from_checkpoint", str(out / "checkpoint-2"), check=True)
    records = _records(out)
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # appended, nothing twice
    loss, eval_loss = _curve(records, "loss"), _curve(records, "eval_loss")
    assert sorted(eval_loss) == [0, 3, 6]
    tb = _tensorboard_scalars(out / "runs")
    _same(tb["train/loss"], loss)
    _same(tb["eval/loss"], eval_loss)
    vdl = _visualdl_scalars(out / "runs")
    _same(vdl["train/loss"], loss)
    _same(vdl["eval/loss"], eval_loss)
    _png_size(out / "loss.png")


THIRD_PARTY = """
    import json
    from pathlib import Path

    from pydantic import BaseModel
    from paddlellm import hookimpl


    class MemoOptions(BaseModel):
        memo_project: str = "default"


    class MemoLogger:
        config_class = MemoOptions

        def __init__(self, options):
            self.project = options.memo_project
            self.events = []

        def on_start(self, config, output_dir):
            self.path = Path(output_dir) / "memo.json"
            self.events.append(["start", config.max_steps])

        def log(self, step, metrics):
            self.events.append(["log", step, dict(metrics)])

        def on_save(self, step):
            self.events.append(["save", step])

        def on_end(self):
            self.events.append(["end"])
            self.path.write_text(json.dumps({"project": self.project, "events": self.events}))


    @hookimpl
    def register_loggers(register):
        register("memo", MemoLogger, description="remembers every record")
"""


def test_a_third_party_logger_registered_through_the_hook_receives_the_metrics(tmp_path):
    site = make_fake_distribution(tmp_path / "site", "memo-logger", "0.1",
                                  {"memo_logger": THIRD_PARTY}, {"memo": "memo_logger"})
    out = tmp_path / "run"
    env = {"PYTHONPATH": f"{site}:{':'.join(p for p in sys.path if p)}"}
    run_cli("run", "--output_dir", str(out), "--max_steps", "3", *TINY, "--loggers", "memo",
            "--memo_project", "tiny", env=env, check=True)
    memo = json.loads((out / "memo.json").read_text())
    assert memo["project"] == "tiny"
    events = memo["events"]
    assert events[0] == ["start", 3] and events[-1] == ["end"]
    assert ["save", 2] in events
    logged = [(e[1], {k: v for k, v in e[2].items() if k != "time"}) for e in events
              if e[0] == "log"]
    expected = [(r["step"], {k: v for k, v in r.items() if k not in ("time", "step")})
                for r in _records(out)]
    assert logged == expected and any("loss" in m for _, m in logged)


def test_a_run_whose_logger_library_is_missing_stops_before_training(tmp_path):
    shadow = tmp_path / "shadow" / "tensorboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'tensorboard'\")\n")
    env = {"PYTHONPATH": f"{shadow.parent}:{':'.join(p for p in sys.path if p)}"}
    out = tmp_path / "run"
    proc = run_cli("run", "--output_dir", str(out), "--max_steps", "2", *TINY,
                   "--report_to", "tensorboard", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'paddlellm[tensorboard]'" in proc.stderr
    assert not (out / "metrics.jsonl").exists()  # nothing trained
