"""Stream any supported checkpoint to a clean safetensors checkpoint, tensor by tensor."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ._dtypes import FLOATING, canonical_dtype
from ._errors import CheckpointError
from .reader import CheckpointReader
from .safetensors_io import TensorSource
from .writer import write_sharded

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pdparams", ".index.json", ".msgpack", ".h5")


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str | None = None,
                       max_shard_size: int | str = "5GB", copy_files: bool = True) -> list[str]:
    """Rewrite ``src`` (safetensors, sharded, or PyTorch ``.bin``) as Hugging Face safetensors in ``dst``.

    Tensors are streamed one at a time (peak memory about one shard's largest tensor, not the
    model); ``dtype`` casts floating tensors and updates ``dtype`` / ``torch_dtype`` in
    ``config.json``. With ``copy_files``, the other files of a source directory (config,
    tokenizer, generation config, chat template...) are copied; weight files and hidden files
    are not. Returns the weight files written.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        raise CheckpointError(f"convert_checkpoint: source and destination are the same directory ({src})")
    target = canonical_dtype(dtype) if dtype is not None else None
    with CheckpointReader(src) as reader:
        sources = []
        for name in reader.keys():
            stored = reader.dtype(name)
            out = target if (target is not None and stored in FLOATING) else stored
            sources.append(TensorSource(name, out, reader.shape(name),
                                        lambda n=name, o=out: reader.get_raw(n, o)))
        written = write_sharded(sources, dst, max_shard_size=max_shard_size)
    if copy_files and src.is_dir():
        for f in sorted(src.iterdir()):
            if f.is_file() and not f.name.startswith(".") and not f.name.endswith(_WEIGHT_SUFFIXES):
                shutil.copy2(f, dst / f.name)
        cfg = dst / "config.json"
        if target is not None and cfg.is_file():
            config = json.loads(cfg.read_text(encoding="utf-8"))
            changed = False
            for key in ("dtype", "torch_dtype"):
                if key in config:
                    config[key], changed = target, True
            if changed:
                cfg.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written
