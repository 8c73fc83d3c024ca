"""Pickled checkpoints are read by an allow-list unpickler: malicious pickles are refused
before anything runs, and the error names the forbidden global and the file."""
from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from paddlellm.checkpoint import CheckpointFormatError, CheckpointReader, UnsafeCheckpointError, load_torch_bin
from paddlellm.errors import PaddleLLMError


def _str(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def eval_payload(marker: Path) -> bytes:
    """Protocol-4 pickle calling builtins.exec via STACK_GLOBAL to create ``marker``."""
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return (b"\x80\x04" + _str("builtins") + _str("exec") + b"\x93"  # STACK_GLOBAL
            + b"X" + struct.pack("<I", len(code)) + code.encode() + b"\x85R.")  # TUPLE1, REDUCE, STOP


def system_payload(marker: Path) -> bytes:
    """Protocol-0 pickle calling os.system via GLOBAL to create ``marker``."""
    return b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."


def _torch_zip(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


def test_payload_is_live_with_plain_pickle(tmp_path):
    """Guard: the payload really executes code when unpickled naively."""
    marker = tmp_path / "plain"
    pickle.loads(eval_payload(marker))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("make, global_name", [(eval_payload, "builtins.exec"), (system_payload, "os.system")])
def test_malicious_zip_checkpoint_refused_without_executing(tmp_path, make, global_name):
    marker = tmp_path / "marker"
    ck = tmp_path / "ck"
    ck.mkdir()
    bin_path = _torch_zip(ck / "pytorch_model.bin", make(marker))
    with pytest.raises(UnsafeCheckpointError) as e:
        CheckpointReader(ck)
    assert f"'{global_name}'" in str(e.value) and "pytorch_model.bin" in str(e.value)
    assert isinstance(e.value, PaddleLLMError)
    with pytest.raises(UnsafeCheckpointError, match=global_name):
        load_torch_bin(bin_path)
    assert not marker.exists()


def test_malicious_legacy_pickle_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    path.write_bytes(eval_payload(marker))
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        CheckpointReader(path)
    assert not marker.exists()


def test_payload_hidden_inside_a_state_dict(tmp_path):
    """A real-looking state dict whose second value is a call to os.system."""
    marker = tmp_path / "marker"
    pkl = (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a"
           + b"cposix\nsystem\nX" + struct.pack("<I", len(f"touch {marker}")) + f"touch {marker}".encode()
           + b"\x85Ru.")
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        CheckpointReader(_torch_zip(tmp_path / "x.bin", pkl))
    assert not marker.exists()


def test_allowed_global_with_bad_arguments_is_a_format_error(tmp_path):
    """_rebuild_tensor_v2 given a plain string instead of a storage: refused, not crashed."""
    pkl = (b"\x80\x02}(X\x01\x00\x00\x00w" + b"ctorch._utils\n_rebuild_tensor_v2\n"
           + b"(X\x03\x00\x00\x00abcK\x00K\x01\x85K\x01\x85\x89}tRu.")
    with pytest.raises(CheckpointFormatError, match="expected a storage"):
        CheckpointReader(_torch_zip(tmp_path / "x.bin", pkl))


def test_unknown_persistent_id_refused(tmp_path):
    pkl = b"\x80\x02}(X\x01\x00\x00\x00wX\x04\x00\x00\x00evilQu."
    with pytest.raises(CheckpointFormatError, match="persistent id"):
        CheckpointReader(_torch_zip(tmp_path / "x.bin", pkl))
