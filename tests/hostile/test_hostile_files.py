"""Hostile and clumsy *files* (issue 14): nothing a checkpoint folder or data file contains
executes code, no load costs memory out of proportion to the file's real size, every
rejection is a clear error naming the file (and the field), and ``--resume`` survives a
corrupt newest checkpoint with ``metrics.jsonl`` keeping one record per step.

The corpus is built at test time by ``forge.py``; each hostile load runs in a fresh process
that measures its peak RSS growth.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hostile import forge
from paddlellm.checkpoint import CheckpointFormatError, CheckpointReader, UnsafeCheckpointError
from paddlellm.errors import ConfigError, DataFormatError, PaddleLLMError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "core" / "paddlellm" / "assets" / "qwen-demo"
MiB = 2**20


def rss_bound(size: int) -> int:
    """What a rejected (or tiny) hostile load may cost: a constant for the interpreter's own
    churn plus a multiple of the file's real size."""
    return 32 * MiB + 64 * size


# --- the corpus, measured in one fresh process -----------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, dict]:
    """{case: {"path", "size", "error", "peak_growth", "expect"}} for every hostile load."""
    d = tmp_path_factory.mktemp("corpus")
    cases: dict[str, tuple[str, Path, str, tuple[str, ...]]] = {}  # kind, path, error, words

    def add(name, kind, path, error, *words):
        cases[name] = (kind, path, error, words)

    add("zip_bomb", "reader", forge.zip_bomb_bin(d / "bomb.bin"), "CheckpointFormatError",
        "bomb.bin", "data.pkl", "PADDLELLM_MAX_ZIP_INFLATION")
    add("memo_bomb", "reader", forge.memo_bomb_bin(d / "memo.bin"), None)
    add("opcode_flood", "reader", forge.op_flood_bin(d / "flood.bin"), None)
    add("encode_amplifier", "reader", forge.encode_amplifier_bin(d / "encode.bin"),
        "CheckpointFormatError", "encode.bin", "builds more than")
    add("storage_claims_2^40", "reader", forge.forged_storage_bin(d / "storage.bin"),
        "CheckpointFormatError", "storage.bin", "storage 0", "holds 16 bytes")
    add("stride_zero_view", "reader", forge.stride_zero_bin(d / "stride.bin"),
        "CheckpointFormatError", "stride.bin", "does not fit its storage")
    fields = {"shape_2^32": ("data_offsets",), "shape_negative": ("shape",),
              "offsets_past_end": ("data_offsets",), "offsets_strings": ("data_offsets",),
              "deep_json": ("nested too deeply",), "huge_header_length": ("header length",),
              "metadata_not_strings": ("__metadata__",)}
    for name, path in forge.forged_safetensors(d / "st").items():
        add(f"safetensors_{name}", "reader", path, "CheckpointFormatError", path.name, *fields[name])
    for name, changes, words in [
        ("hidden_size_str", {"hidden_size": "big"}, ("hidden_size", "'big'")),
        ("vocab_10^12", {"vocab_size": 10**12}, ("vocab_size",)),
        ("negative_layers", {"num_hidden_layers": -3}, ("num_hidden_layers",)),
        ("float_nan", {"rms_norm_eps": float("nan")}, ("rms_norm_eps",)),
        # every field in range, but 500 billion parameters from 3 MB of weights
        ("unbacked_size", {"vocab_size": 2**24, "hidden_size": 2**14,
                           "intermediate_size": 2**14, "num_attention_heads": 128,
                           "num_key_value_heads": 128, "head_dim": 128}, ("parameters",)),
    ]:
        ck = forge.with_config(DEMO, d / name, **changes)
        add(f"config_{name}", "auto", ck, "CheckpointFormatError", "config.json", *words)

    spec = d / "cases.json"
    spec.write_text(json.dumps({"warm": str(DEMO), "cases": [
        {"kind": kind, "path": str(path)} for kind, path, _, _ in cases.values()]}))
    proc = subprocess.run([sys.executable, str(Path(forge.__file__)), "measure", str(spec)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stdout + proc.stderr[-3000:]
    out = {}
    for (name, (kind, path, error, words)), result in zip(cases.items(), results):
        size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) \
            if Path(path).is_dir() else Path(path).stat().st_size
        out[name] = {**result, "size": size, "expect": error, "words": words}
    return out


CASES = ["zip_bomb", "memo_bomb", "opcode_flood", "encode_amplifier", "storage_claims_2^40",
         "stride_zero_view"] + [f"safetensors_{n}" for n in (
             "shape_2^32", "shape_negative", "offsets_past_end", "offsets_strings", "deep_json",
             "huge_header_length", "metadata_not_strings")] + [f"config_{n}" for n in (
                 "hidden_size_str", "vocab_10^12", "negative_layers", "float_nan", "unbacked_size")]


@pytest.mark.parametrize("case", CASES)
def test_hostile_load_is_refused_clearly_and_cheaply(corpus, case):
    r = corpus[case]
    if r["expect"] is None:  # harmless content: loads (to nothing), cheaply
        assert r["error"] is None, r["error"]
    else:
        assert r["error"] is not None, f"{case} loaded without an error"
        assert r["error"]["type"] == r["expect"], r["error"]
        assert "PaddleLLMError" in r["error"]["mro"]  # the CLI prints it without a traceback
        for word in r["words"]:
            assert word in r["error"]["message"], (word, r["error"]["message"])
    assert r["peak_growth"] <= rss_bound(r["size"]), (
        f"{case}: peak RSS +{r['peak_growth'] / MiB:.1f} MiB for a {r['size']}-byte file")


def test_zip_bomb_would_really_inflate(tmp_path):
    """Guard: the bomb is real — its data.pkl inflates to 1000x the file (what a reader
    without the size check would allocate)."""
    import zipfile

    path = forge.zip_bomb_bin(tmp_path / "bomb.bin", inflated=8 * MiB)
    info = zipfile.ZipFile(path).getinfo("archive/data.pkl")
    assert info.file_size == 8 * MiB and info.file_size > 500 * path.stat().st_size


def test_inflation_limit_is_configurable(tmp_path, monkeypatch):
    """A highly compressible (not malicious) member is refused by default and read once the
    environment allows its ratio."""
    import zipfile

    text = b"a" * (2 * MiB)
    pkl = b"\x80\x02}X\x01\x00\x00\x00aX" + len(text).to_bytes(4, "little") + text + b"s."
    path = forge.torch_zip(tmp_path / "x.bin", pkl, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointFormatError, match="PADDLELLM_MAX_ZIP_INFLATION"):
        CheckpointReader(path)
    monkeypatch.setenv("PADDLELLM_MAX_ZIP_INFLATION", "5000")
    CheckpointReader(path).close()


@pytest.mark.parametrize("name, pkl, words", [
    ("deep_dicts", b"\x80\x02" + b"}X\x01\x00\x00\x00a" * 100 + b"}" + b"s" * 100 + b".",
     "nested deeper than 64"),
    ("deep_persistent_id", b"\x80\x02" + b"]" * 50_000 + b"a" * 49_999 + b"Q.", "persistent id"),
    ("huge_int_key", b"\x80\x02}\x8b" + (10_000).to_bytes(4, "little") + b"\x01" * 10_000 + b"}s.",
     "not a readable PyTorch checkpoint"),
    ("build_on_a_function", b"\x80\x02ccollections\nOrderedDict\n}b.", "sets state on a"),
    ("extension_registry", b"\x80\x02\x82\x01.", "extension registry"),
])
def test_malformed_pickles_are_format_errors(tmp_path, name, pkl, words):
    path = forge.torch_zip(tmp_path / f"{name}.bin", pkl)
    with pytest.raises(CheckpointFormatError) as err:
        CheckpointReader(path)
    assert str(err.value).startswith(str(path)) and words in str(err.value)


# --- nothing executes --------------------------------------------------------------------------

def test_payloads_are_live(tmp_path):
    """Guard: the payloads really execute code when unpickled naively."""
    marker = tmp_path / "m1"
    pickle.loads(forge.exec_payload(marker))
    assert marker.exists()
    marker = tmp_path / "m2"
    pickle.loads(forge.system_payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("payload", [forge.exec_payload, forge.system_payload])
def test_pickled_weights_never_execute(tmp_path, payload):
    marker = tmp_path / "marker"
    ck = tmp_path / "ck"
    ck.mkdir()
    forge.torch_zip(ck / "pytorch_model.bin", payload(marker))
    (tmp_path / "legacy.pt").write_bytes(payload(marker))
    for target in (ck, tmp_path / "legacy.pt"):
        with pytest.raises(UnsafeCheckpointError) as err:
            CheckpointReader(target)
        assert "refusing to load pickled global" in str(err.value)
    assert not marker.exists()


# --- index escapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors",
                                   "link.safetensors"])
def test_index_cannot_leave_the_checkpoint_folder(tmp_path, shard):
    ck = forge.escaping_index(tmp_path / "ck", shard, outside=tmp_path / "outside.safetensors")
    if shard == "link.safetensors":  # a symlink inside the folder pointing outside
        os.symlink(tmp_path / "outside.safetensors", ck / "link.safetensors")
    with pytest.raises(CheckpointFormatError) as err:
        CheckpointReader(ck)
    message = str(err.value)
    assert "model.safetensors.index.json" in message and shard in message


def test_hugging_face_cache_layout_still_loads(tmp_path):
    snapshot = forge.hf_cache_layout(tmp_path / "hub")
    with CheckpointReader(snapshot) as reader:
        assert reader.keys() == ["w"] and reader.get_numpy("w").tolist() == [0.0, 0.0]


@pytest.mark.parametrize("content", [b"\x80\x81 not utf-8", b"[" * 100_000, b"[1, 2]"])
def test_corrupt_tokenizer_files_are_clear_errors(tmp_path, content):
    from paddlellm.tokenizer import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):
        ck = forge.copy_checkpoint(DEMO, tmp_path / name)
        (ck / name).write_bytes(content)
        with pytest.raises(CheckpointFormatError, match=re.escape(str(ck / name))):
            AutoTokenizer.from_pretrained(ck)


def test_bad_generation_config_is_a_clear_error(tmp_path):
    from paddlellm.modeling.auto import AutoModelForCausalLM

    ck = forge.copy_checkpoint(DEMO, tmp_path / "ck")
    (ck / "generation_config.json").write_text(json.dumps({"eos_token_id": ["big"]}))
    with pytest.raises(CheckpointFormatError,
                       match=r"generation_config\.json: field 'eos_token_id' must be a token id"):
        AutoModelForCausalLM.from_pretrained(ck)


# --- run-level errors ---------------------------------------------------------------------------

def llm_run(*args: str) -> dict:
    from paddlellm.plugin.config import build_run_config
    from paddlellm.plugin.manager import get_plugin_manager
    from paddlellm.training.compose import run

    manager = get_plugin_manager()
    return run(build_run_config(None, list(args), registry=manager.registry), manager)


def test_binary_data_file_is_a_clear_error(tmp_path):
    from paddlellm.data.sft import read_sft_jsonl
    from paddlellm.data.textfile import read_text_documents

    data = forge.binary_file(tmp_path / "model.bin")
    for read in (read_sft_jsonl, read_text_documents):
        with pytest.raises(DataFormatError, match=r"model\.bin:1: not UTF-8 text at byte 0"):
            read(data)
    nul = tmp_path / "zeros.txt"
    nul.write_bytes(b"fine\n" + b"\0" * 64)
    with pytest.raises(DataFormatError, match=r"zeros\.txt:2: NUL byte at byte 5"):
        read_text_documents(nul)
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataFormatError, match=r"deep\.jsonl:1: JSON nested too deeply"):
        read_sft_jsonl(deep)


def test_binary_data_through_the_cli_has_no_traceback(tmp_path):
    data = forge.binary_file(tmp_path / "weights.bin")
    proc = subprocess.run([sys.executable, "-m", "paddlellm", "run", "--stage", "pretrain",
                           "--model_name_or_path", str(DEMO), "--data", str(data),
                           "--output_dir", str(tmp_path / "out"), "--max_steps", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"{data}:1: not UTF-8 text" in proc.stderr


def test_bad_paths_are_clear_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=rf"--model_name_or_path {missing}: not found"):
        llm_run("--model_name_or_path", str(missing), "--output_dir", str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="no config.json"):
        llm_run("--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "o"))
    afile = tmp_path / "taken"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=rf"--output_dir {afile}: is an existing file"):
        llm_run("--output_dir", str(afile))
    with pytest.raises(ConfigError, match=rf"--output_dir {afile / 'sub'}: is inside {afile}"):
        llm_run("--output_dir", str(afile / "sub"))


# --- resume -----------------------------------------------------------------------------------

STEPS = 4
TRAIN = ("--stage", "pretrain", "--model_name_or_path", str(DEMO), "--max_steps", str(STEPS),
         "--save_steps", "1", "--logging_steps", "1", "--eval_steps", "2", "--max_length", "32",
         "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "8",
         "--learning_rate", "1e-3")


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("".join(f"the number {i} comes after {i - 1} and before {i + 1}\n"
                            for i in range(1, 120)))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_data) -> Path:
    """An output folder of a finished run: checkpoint-1..3 (the last step is the output)."""
    out = tmp_path_factory.mktemp("run") / "out"
    llm_run("--output_dir", str(out), "--data", text_data, *TRAIN)
    return out


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_one_record_per_step_and_kind(out: Path) -> None:
    kinds = Counter((r["step"], "loss" if "loss" in r else "eval" if "eval_loss" in r else "info")
                    for r in records(out))
    assert max(kinds.values()) == 1, [k for k, n in kinds.items() if n > 1]
    assert sorted(s for s, kind in kinds if kind == "loss") == list(range(1, STEPS + 1))


def test_checkpoint_holds_no_pickle(trained):
    ckpt = trained / "checkpoint-2"
    names = {p.name for p in ckpt.iterdir()}
    assert {"optimizer.safetensors", "optimizer.json", "trainer_state.json"} <= names
    assert not any(n.endswith((".pdopt", ".pdparams", ".pkl", ".bin")) for n in names)
    meta = json.loads((ckpt / "optimizer.json").read_text())
    assert meta["format"] == "paddlellm.optimizer/1" and "last_epoch" in meta["scheduler"]
    with CheckpointReader(ckpt / "optimizer.safetensors") as reader:
        assert any(k.endswith("moment1_0") and k.startswith("model.") for k in reader.keys())


def test_resume_skips_corrupt_checkpoints_and_keeps_one_record_per_step(
        trained, text_data, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    (out / "checkpoint-3" / "trainer_state.json").write_text('{"step": "three"')  # torn write
    with open(out / "checkpoint-2" / "optimizer.safetensors", "r+b") as fh:  # truncated
        fh.truncate(os.path.getsize(fh.name) // 2)
    capsys.readouterr()
    summary = llm_run("--output_dir", str(out), "--data", text_data, *TRAIN, "--resume")
    err = capsys.readouterr().err
    assert f"skipping {out / 'checkpoint-3'}" in err and "trainer_state.json" in err
    assert f"skipping {out / 'checkpoint-2'}" in err and "optimizer.safetensors" in err
    assert summary["steps"] == STEPS
    assert_one_record_per_step_and_kind(out)
    assert records(out)[0]["step"] == 0  # the interrupted run's evaluation before training
    for r in records(trained):  # steps up to the resumed checkpoint are the original records
        if r["step"] <= 1:
            assert r in records(out)


def test_resume_from_a_corrupt_checkpoint_is_an_error(trained, text_data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    (out / "checkpoint-2" / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"checkpoint-2/tokenizer\.json: missing"):
        llm_run("--output_dir", str(out), "--data", text_data, *TRAIN,
                "--resume_from_checkpoint", str(out / "checkpoint-2"))


def test_old_pickled_optimizer_is_refused_never_run(trained, text_data, tmp_path, capsys):
    out, marker = tmp_path / "out", tmp_path / "marker"
    shutil.copytree(trained, out)
    for name in ("checkpoint-1", "checkpoint-2", "checkpoint-3"):
        forge.legacy_optimizer(out / name, marker)
    with pytest.raises(ConfigError, match=r"checkpoint-3/optimizer\.pdopt: pickled optimizer"):
        llm_run("--output_dir", str(out), "--data", text_data, *TRAIN,
                "--resume_from_checkpoint", str(out / "checkpoint-3"))
    capsys.readouterr()
    llm_run("--output_dir", str(out), "--data", text_data, *TRAIN, "--resume")  # all skipped
    assert "optimizer.pdopt: pickled optimizer" in capsys.readouterr().err
    assert not marker.exists()
    assert_one_record_per_step_and_kind(out)  # started from scratch: a fresh metrics file


def test_restart_from_scratch_starts_a_fresh_metrics_file(trained, text_data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    llm_run("--output_dir", str(out), "--data", text_data, *TRAIN)  # no --resume
    assert_one_record_per_step_and_kind(out)


def test_torn_metrics_line_is_tolerated_on_resume(trained, text_data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "loss": 1.')  # killed mid-write
    llm_run("--output_dir", str(out), "--data", text_data, *TRAIN, "--resume")
    assert_one_record_per_step_and_kind(out)


def test_errors_are_paddlellm_errors():
    """What the CLI prints without a traceback covers every error raised above."""
    for cls in (CheckpointFormatError, UnsafeCheckpointError, ConfigError, DataFormatError):
        assert issubclass(cls, PaddleLLMError)
