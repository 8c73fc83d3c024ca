"""Writing checkpoints: Hugging Face layout and sharding identical to transformers', exact round
trips (bfloat16 included), stale-shard cleanup, streaming conversion."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from paddlellm.checkpoint import (
    CheckpointError,
    CheckpointReader,
    bf16_bits_to_float32,
    convert_checkpoint,
    float32_to_bf16_bits,
    parse_size,
    save_state_dict,
)

FIX = Path(__file__).parent / "fixtures" / "checkpoint"
HF_EXPECTED = dict(np.load(FIX / "hf_expected.npz"))  # state_dict order of the tiny Llama


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("12KB") == 12_000
    assert parse_size(" 1.5 kib ") == 1536
    assert parse_size(1234) == 1234
    for bad in ("5 parsecs", "GB", "", 0, "-1MB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_sharding_and_index_identical_to_transformers(tmp_path):
    files = save_state_dict(HF_EXPECTED, tmp_path, max_shard_size="12KB")
    theirs = json.loads((FIX / "hf_sharded" / "model.safetensors.index.json").read_text())
    ours = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert ours == theirs  # same shard split, file names, total_size and total_parameters
    assert files == sorted(set(theirs["weight_map"].values())) + ["model.safetensors.index.json"]
    assert (tmp_path / "model.safetensors.index.json").read_text() == \
        json.dumps(theirs, indent=2, sort_keys=True) + "\n"
    with CheckpointReader(tmp_path) as r:
        assert sorted(r) == sorted(HF_EXPECTED)
        for name, want in HF_EXPECTED.items():
            np.testing.assert_array_equal(r.get_numpy(name), want)
            assert r.get_numpy(name).dtype == want.dtype


def test_single_file_readable_by_official_safetensors(tmp_path):
    from safetensors import safe_open

    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(3, dtype=np.int64),
             "c": np.ones((2, 2), dtype=np.float16), "d": np.zeros((0, 4), np.float32)}
    assert save_state_dict(state, tmp_path, metadata={"format": "pt", "note": "x"}) == ["model.safetensors"]
    assert not (tmp_path / "model.safetensors.index.json").exists()
    with safe_open(tmp_path / "model.safetensors", framework="np") as f:
        assert f.metadata() == {"format": "pt", "note": "x"}
        for k, v in state.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)
            assert f.get_tensor(k).dtype == v.dtype
    data = (tmp_path / "model.safetensors").read_bytes()
    assert int.from_bytes(data[:8], "little") % 8 == 0  # data region 8-byte aligned


def test_default_metadata_is_format_pt(tmp_path):
    from safetensors import safe_open

    save_state_dict({"w": np.ones(3, np.float32)}, tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="np") as f:
        assert f.metadata() == {"format": "pt"}


def test_bfloat16_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 33)).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, np.nan, 0.0]
    save_state_dict({"x": x, "ids": np.arange(5)}, tmp_path, dtype="bfloat16")
    with CheckpointReader(tmp_path) as r:
        assert r.dtype("x") == "bfloat16" and r.dtype("ids") == "int64"  # only floats are cast
        bits = r.get_raw("x")
        np.testing.assert_array_equal(bits, float32_to_bf16_bits(x))
        got = r.get_numpy("x")
        np.testing.assert_array_equal(got, bf16_bits_to_float32(float32_to_bf16_bits(x)))
        # re-saving bf16 bits loses nothing
        save_state_dict({"x": r.get_tensor("x") if _has_paddle() else got}, tmp_path / "again",
                        dtype=None if _has_paddle() else "bfloat16")
    with CheckpointReader(tmp_path / "again") as r2:
        np.testing.assert_array_equal(r2.get_raw("x"), bits)


def _has_paddle() -> bool:
    try:
        import paddle  # noqa: F401
    except ImportError:
        return False
    return True


def test_float32_to_bf16_rounding_cases():
    one = 0x3F80
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-8), 3.4e38, np.inf, np.nan, -0.0],
                 dtype=np.float32)
    bits = float32_to_bf16_bits(x)
    assert bits[:4].tolist() == [one, one + 2, one + 1, 0xBF80]  # ties to even, above tie rounds up
    assert bits[4] == 0x7F80 and bits[5] == 0x7F80  # overflow to inf, inf stays inf
    assert np.isnan(bf16_bits_to_float32(bits[6:7]))[0] and bits[7] == 0x8000


def test_paddle_tensors_saved_with_their_dtype(tmp_path):
    paddle = pytest.importorskip("paddle")
    x = paddle.to_tensor(np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6))
    state = {"f32": x, "bf16": x.astype("bfloat16"), "f16": x.astype("float16"), "i": paddle.arange(4)}
    save_state_dict(state, tmp_path)
    with CheckpointReader(tmp_path) as r:
        assert {k: r.dtype(k) for k in r} == {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "i": "int64"}
        np.testing.assert_array_equal(r.get_raw("bf16"), state["bf16"].numpy())
        np.testing.assert_array_equal(r.get_numpy("f16"), state["f16"].numpy())
        t = r.get_tensor("bf16")
        assert t.dtype == paddle.bfloat16
        np.testing.assert_array_equal(t.numpy(), state["bf16"].numpy())


def test_stale_shards_removed_and_other_files_kept(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"keep me")
    save_state_dict(HF_EXPECTED, tmp_path, max_shard_size="12KB")
    assert len(list(tmp_path.glob("model-*-of-00003.safetensors"))) == 3
    save_state_dict(HF_EXPECTED, tmp_path, max_shard_size="20KB")  # now 2 shards
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in names if n.startswith("model")] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    save_state_dict(HF_EXPECTED, tmp_path)  # one file: shards and index go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "pytorch_model.bin"]
    save_state_dict(HF_EXPECTED, tmp_path, max_shard_size="20KB")  # a stale single file would shadow the index
    assert not (tmp_path / "model.safetensors").exists()


def test_oversized_tensor_gets_its_own_shard(tmp_path):
    state = {"a": np.zeros(10, np.float32), "big": np.zeros(100, np.float32), "b": np.zeros(10, np.float32)}
    save_state_dict(state, tmp_path, max_shard_size=100)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    # huggingface_hub's split: the oversized tensor is emitted at once, "a" and "b" fill one shard
    assert index["weight_map"] == {"big": "model-00001-of-00002.safetensors",
                                   "a": "model-00002-of-00002.safetensors",
                                   "b": "model-00002-of-00002.safetensors"}
    assert index["metadata"]["total_size"] == 480


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    save_state_dict({"w": np.ones(4, np.float32)}, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    bad = {"w": np.zeros(4, np.float32), "x": np.zeros(3, np.complex64)}  # unsupported dtype
    with pytest.raises(ValueError, match="complex64"):
        save_state_dict(bad, tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]  # no temp files left behind


def test_convert_torch_bin_to_safetensors(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIX / "torch_sharded", src)
    (src / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float32"}))
    (src / "tokenizer.json").write_text("{}")
    (src / "generation_config.json").write_text("{}")
    (src / "training_args.bin").write_bytes(b"pickle")
    expected = dict(np.load(FIX / "torch_expected.npz"))
    files = convert_checkpoint(src, tmp_path / "out", max_shard_size=200)
    assert len(files) > 2 and files[-1] == "model.safetensors.index.json"
    with CheckpointReader(tmp_path / "out") as r:
        assert r.format == "safetensors" and r.keys() == list(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(r.get_numpy(k), v)
        assert r.dtype("layer.bf16") == "bfloat16"
    out_files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"config.json", "tokenizer.json", "generation_config.json"} <= set(out_files)
    assert not any(n.endswith(".bin") for n in out_files)

    convert_checkpoint(src, tmp_path / "bf16", dtype="bfloat16")
    with CheckpointReader(tmp_path / "bf16") as r:
        assert r.dtype("layer.fp32") == "bfloat16" and r.dtype("layer.ids") == "int64"
        np.testing.assert_array_equal(r.get_raw("layer.fp32"), float32_to_bf16_bits(expected["layer.fp32"]))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with pytest.raises(CheckpointError, match="same directory"):
        convert_checkpoint(src, src)
