"""Reading checkpoints: torch .bin (zip, sharded, legacy) and transformers-written safetensors,
compared exactly with values dumped by PyTorch (scripts/fixtures/make_checkpoint_fixtures.py)."""
from __future__ import annotations

import json
import mmap
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paddlellm.checkpoint import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    CheckpointReader,
    bf16_bits_to_float32,
    float32_to_bf16_bits,
    load_torch_bin,
)
from paddlellm.errors import PaddleLLMError

FIX = Path(__file__).parent / "fixtures" / "checkpoint"
TORCH_EXPECTED = dict(np.load(FIX / "torch_expected.npz"))
TORCH_DTYPES = json.loads((FIX / "torch_expected_dtypes.json").read_text())
HF_EXPECTED = dict(np.load(FIX / "hf_expected.npz"))


def _assert_exact(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.shape == want.shape, name
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("layout", ["torch_single", "torch_sharded", "torch_legacy"])
def test_torch_bin_matches_torch_values(layout):
    with CheckpointReader(FIX / layout) as r:
        assert r.format == "torch"
        assert r.keys() == list(TORCH_EXPECTED)  # order preserved
        assert len(r) == len(TORCH_EXPECTED) and "layer.bf16" in r and "nope" not in r
        for name in r:
            assert r.dtype(name) == TORCH_DTYPES[name], name
            assert r.shape(name) == TORCH_EXPECTED[name].shape
            _assert_exact(r.get_numpy(name), TORCH_EXPECTED[name], name)


def test_torch_views_and_tied_storage():
    with CheckpointReader(FIX / "torch_single" / "pytorch_model.bin") as r:
        big = r.get_numpy("layer.big")
        np.testing.assert_array_equal(r.get_numpy("layer.row"), big[2])  # storage offset
        np.testing.assert_array_equal(r.get_numpy("layer.col"), big[1:, 3])  # offset + stride
        np.testing.assert_array_equal(r.get_numpy("lm_head.weight"), r.get_numpy("model.embed_tokens.weight"))
        assert r.get_numpy("layer.transposed").flags.c_contiguous
        assert r.get_numpy("layer.scale").shape == () and r.get_numpy("layer.scale") == 0.125
        assert r.shape("layer.empty") == (0, 3)


def test_load_torch_bin_eager():
    state = load_torch_bin(FIX / "torch_single" / "pytorch_model.bin")
    assert list(state) == list(TORCH_EXPECTED)
    for name, want in TORCH_EXPECTED.items():
        _assert_exact(state[name], want, name)
        assert state[name].flags.writeable  # eager copies, not views of a closed file


def test_transformers_sharded_safetensors():
    with CheckpointReader(FIX / "hf_sharded") as r:
        assert r.format == "safetensors"
        assert r.weights_path.name == "model.safetensors.index.json"
        assert sorted(r.keys()) == sorted(HF_EXPECTED)
        assert r.index_metadata["total_size"] == sum(a.nbytes for a in HF_EXPECTED.values())
        for name, want in HF_EXPECTED.items():
            _assert_exact(r.get_numpy(name), want, name)


def test_matches_official_safetensors_reader():
    from safetensors.numpy import load_file

    with CheckpointReader(FIX / "hf_sharded") as r:
        for shard in sorted((FIX / "hf_sharded").glob("*.safetensors")):
            for name, want in load_file(shard).items():
                _assert_exact(r.get_numpy(name), want, name)


def test_bf16_widening_is_exact_and_rounding_matches_torch():
    with CheckpointReader(FIX / "hf_bf16") as r:
        for name, fp32 in HF_EXPECTED.items():
            assert r.dtype(name) == "bfloat16"
            bits = r.get_raw(name)
            assert bits.dtype == np.uint16
            # our float32 -> bf16 rounding gives exactly the bits torch wrote
            np.testing.assert_array_equal(float32_to_bf16_bits(fp32), bits, err_msg=name)
            _assert_exact(r.get_numpy(name), bf16_bits_to_float32(bits), name)
            assert r.get_numpy(name, dtype="float16").dtype == np.float16
        with pytest.raises(ValueError, match="NumPy has no bfloat16"):
            r.get_numpy(name, dtype="bfloat16")


def _backed_by_mmap(a: np.ndarray) -> bool:
    while isinstance(a, np.ndarray):
        a = a.base
    if isinstance(a, memoryview):
        a = a.obj
    return isinstance(a, mmap.mmap)


@pytest.mark.parametrize("layout", ["hf_sharded", "torch_single"])
def test_get_numpy_is_lazy_mmapped_view(layout):
    with CheckpointReader(FIX / layout) as r:
        name = "lm_head.weight"
        a = r.get_numpy(name)
        assert _backed_by_mmap(a) and not a.flags.writeable
        assert not _backed_by_mmap(r.get_numpy(name, dtype="float16"))  # a cast is a fresh array
    np.testing.assert_array_equal(a, a.copy())  # still valid after close


def test_missing_weights_error_lists_what_was_looked_for(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError) as e:
        CheckpointReader(tmp_path)
    msg = str(e.value)
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json"):
        assert name in msg
    assert isinstance(e.value, PaddleLLMError) and isinstance(e.value, FileNotFoundError)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match="adapter_model.safetensors"):
        CheckpointReader(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        CheckpointReader(tmp_path / "nowhere")


def test_safetensors_preferred_over_bin(tmp_path):
    shutil.copy(FIX / "torch_single" / "pytorch_model.bin", tmp_path)
    shutil.copy(FIX / "hf_bf16" / "model.safetensors", tmp_path)
    with CheckpointReader(tmp_path) as r:
        assert r.format == "safetensors" and r.weights_path.name == "model.safetensors"


def test_index_with_missing_shard(tmp_path):
    shutil.copytree(FIX / "hf_sharded", tmp_path / "ck")
    (tmp_path / "ck" / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="model-00002-of-00003.safetensors"):
        CheckpointReader(tmp_path / "ck")


def test_truncated_and_garbage_files(tmp_path):
    data = (FIX / "hf_bf16" / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        CheckpointReader(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(CheckpointFormatError, match="not valid JSON"):
        CheckpointReader(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointFormatError, match="x.bin"):
        CheckpointReader(tmp_path / "x.bin")


def test_unknown_tensor_name():
    with CheckpointReader(FIX / "hf_bf16") as r, pytest.raises(KeyError, match="not.there"):
        r.get_numpy("not.there")


def test_get_tensor_paddle_dtypes():
    paddle = pytest.importorskip("paddle")
    name = "model.layers.0.self_attn.q_proj.weight"
    with CheckpointReader(FIX / "hf_bf16") as rb, CheckpointReader(FIX / "hf_sharded") as rf:
        t = rb.get_tensor(name)
        assert t.dtype == paddle.bfloat16 and tuple(t.shape) == rb.shape(name)
        np.testing.assert_array_equal(t.astype("float32").numpy(), rb.get_numpy(name))
        # fp32 checkpoint -> bf16 tensor: same bits torch's .to(bfloat16) produced
        t = rf.get_tensor(name, dtype="bfloat16")
        assert t.dtype == paddle.bfloat16
        np.testing.assert_array_equal(t.numpy(), rb.get_raw(name))
        assert rf.get_tensor(name, dtype="float16").dtype == paddle.float16
        t = rf.get_tensor(name)
        assert t.dtype == paddle.float32
        np.testing.assert_array_equal(t.numpy(), HF_EXPECTED[name])
    with CheckpointReader(FIX / "torch_single") as r:
        assert r.get_tensor("layer.fp16").dtype == paddle.float16
        assert r.get_tensor("layer.ids").dtype == paddle.int64


def test_importing_checkpoint_does_not_import_paddle():
    code = "import sys, paddlellm.checkpoint; assert 'paddle' not in sys.modules, 'paddle imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_float8_all_bit_patterns_match_torch():
    expected = dict(np.load(FIX / "fp8_expected.npz"))
    with CheckpointReader(FIX / "fp8.safetensors") as r:
        for name, want in expected.items():
            assert r.dtype(name) == name
            got = r.get_numpy(name)  # widened to float32
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)  # NaNs in the same places


def test_open_index_file_directly_and_metadata():
    with CheckpointReader(FIX / "hf_sharded" / "model.safetensors.index.json") as r:
        assert r.metadata == {"format": "pt"}
        assert r.file_of("lm_head.weight").name == "model-00003-of-00003.safetensors"
    with CheckpointReader(FIX / "torch_sharded" / "pytorch_model.bin.index.json") as r:
        assert r.keys() == list(TORCH_EXPECTED) and r.metadata == {}


def test_reads_without_mmap(monkeypatch):
    """Filesystems that refuse mmap: the reader falls back to plain reads, same values."""
    from paddlellm.checkpoint import safetensors_io

    def no_mmap(*a, **k):
        raise OSError("mmap not supported")

    monkeypatch.setattr(safetensors_io.mmap, "mmap", no_mmap)
    for layout, expected in (("hf_sharded", HF_EXPECTED), ("torch_single", TORCH_EXPECTED)):
        with CheckpointReader(FIX / layout) as r:
            for name, want in expected.items():
                _assert_exact(r.get_numpy(name), want, name)
