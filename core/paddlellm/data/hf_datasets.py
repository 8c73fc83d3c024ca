"""Hugging Face ``datasets`` sources for ``--data`` / ``--eval_data``.

Besides PaddleNLP's jsonl files, a data option may name:

* a local ``.parquet`` or ``.arrow`` file, a ``.json`` file holding one JSON array, or a folder
  of such files (as ``datasets.load_dataset`` reads a folder: split names from the file names,
  ``train-00000-of-00001.parquet``, ``test.parquet``, ...), or a folder written by
  ``Dataset.save_to_disk``;
* a dataset id of the Hugging Face Hub (``org/name``), resolved like model ids
  (:mod:`paddlellm.hub`): downloaded into the Hub cache (``HF_HUB_CACHE``) with
  ``huggingface_hub.snapshot_download`` or, with ``HF_HUB_OFFLINE=1``, read from that cache.

``SOURCE:SPLIT`` picks a split (default ``train``, or the only one). Rows are read with
``datasets`` (an optional extra: ``pip install 'paddlellm[datasets]'``) and handed to the
stage's reader as records, after the column mapping of :mod:`paddlellm.data.columns`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, DataFormatError

#: files ``load_dataset`` reads by builder
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json",
            ".csv": "csv"}
#: what a Hub dataset snapshot fetches (data files and the card whose YAML names the configs)
HUB_PATTERNS = ["*.parquet", "*.arrow", "*.json", "*.jsonl", "*.csv", "README.md",
                "**/*.parquet", "**/*.arrow", "**/*.json", "**/*.jsonl", "**/*.csv"]
#: local file suffixes that are never Hub ids when the file is missing
_FILE_SUFFIXES = (".json", ".jsonl", ".txt", ".parquet", ".arrow", ".csv", ".bin", ".idx")
_SPLIT = re.compile(r"^(?P<source>.+?):(?P<split>[A-Za-z0-9_.\-\[\]%:]+)$")
INSTALL = "pip install 'paddlellm[datasets]'"


def split_source(source: str) -> tuple[str, str | None]:
    """``"org/name:test"`` -> ``("org/name", "test")``; a path that exists is never split."""
    if os.path.exists(source):
        return source, None
    match = _SPLIT.match(source)
    if match and not re.match(r"^[A-Za-z]$", match["source"]):  # not a Windows drive letter
        return match["source"], match["split"]
    return source, None


def _is_json_array(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _data_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in BUILDERS
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def is_datasets_source(source: str | os.PathLike | None) -> bool:
    """Whether ``source`` is read with ``datasets`` rather than as a jsonl file."""
    if not source:
        return False
    from ..hub import is_hub_id

    path, _ = split_source(os.fspath(source))
    p = Path(path)
    if p.is_file():
        # a JSON array file goes to datasets; a .jsonl file is JSON Lines, always ours (its
        # line-by-line reader bounds nesting and names the line)
        return p.suffix in (".parquet", ".arrow") or (p.suffix == ".json" and _is_json_array(p))
    if p.is_dir():
        return (p / "dataset_info.json").is_file() or (p / "state.json").is_file() \
            or any(f.suffix in (".parquet", ".arrow") for f in _data_files(p))
    return not p.exists() and is_hub_id(path) and not path.endswith(_FILE_SUFFIXES)


def require_datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(f"reading Hugging Face datasets needs the 'datasets' package ({exc}); "
                          f"install it with `{INSTALL}`") from None
    major = datasets.__version__.split(".")[0]
    if not major.isdigit() or int(major) < 4:  # 3.x and older run a folder's loading script
        raise ConfigError(f"datasets {datasets.__version__} can run a dataset folder's loading "
                          f"script; paddlellm reads datasets only with datasets>=4 (no scripts): "
                          f"`{INSTALL}`")
    return datasets


def resolve_dataset(repo_id: str) -> str:
    """The local snapshot folder of Hub dataset ``repo_id`` (downloaded, or from the cache
    with ``HF_HUB_OFFLINE=1``); errors say what to do, as for model ids."""
    import huggingface_hub as hf
    from huggingface_hub import errors as hf_errors

    from ..hub import hub_cache_dir, offline

    cache = hub_cache_dir()
    try:
        return hf.snapshot_download(repo_id, repo_type="dataset", cache_dir=cache,
                                    allow_patterns=HUB_PATTERNS, local_files_only=offline())
    except hf_errors.GatedRepoError:
        raise DataFormatError(f"dataset '{repo_id}' is gated on the Hugging Face Hub: accept its "
                              "terms on huggingface.co and log in (`hf auth login` or "
                              "HF_TOKEN)") from None
    except hf_errors.RepositoryNotFoundError:
        raise DataFormatError(f"--data {repo_id}: neither a local file or folder nor a dataset "
                              "on the Hugging Face Hub") from None
    except hf_errors.LocalEntryNotFoundError:
        how = ("HF_HUB_OFFLINE is set, so nothing is downloaded: unset it, or download it where "
               f"there is a network (`hf download --repo-type dataset {repo_id}`)"
               if offline() else "the Hub cannot be reached to download it (no network?)")
        raise DataFormatError(f"--data {repo_id}: not a local file or folder and not in the "
                              f"Hugging Face cache ({cache}); {how}") from None
    except (OSError, hf_errors.HfHubHTTPError) as exc:
        raise DataFormatError(f"downloading dataset '{repo_id}' failed: {exc}") from None


def _load(path: str) -> Any:
    """A ``DatasetDict`` (or ``Dataset``) of a local file or folder."""
    datasets = require_datasets()
    p = Path(path)
    if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "state.json").is_file()
                       or (p / "dataset_dict.json").is_file()):
        return datasets.load_from_disk(str(p))
    if p.is_file():
        return datasets.load_dataset(BUILDERS.get(p.suffix, "json"), data_files=str(p))
    return datasets.load_dataset(str(p))


def iter_dataset_records(source: str | os.PathLike, what: str = "data"
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` of the chosen split of a datasets source; ``where`` names the source,
    split and row for error messages."""
    from ..hub import is_hub_id

    path, split = split_source(os.fspath(source))
    local = path if Path(path).exists() else None
    if local is None:
        if not is_hub_id(path):
            raise DataFormatError(f"{what} not found: {path}")
        local = resolve_dataset(path)
    try:
        loaded = _load(local)
    except (ConfigError, DataFormatError):
        raise
    except Exception as exc:  # datasets' own errors: unreadable files, mixed columns, ...
        raise DataFormatError(f"{source}: datasets could not read it: {exc}") from None
    if hasattr(loaded, "keys"):  # a DatasetDict: pick the split
        splits = list(loaded.keys())
        chosen = split or ("train" if "train" in splits else splits[0] if len(splits) == 1
                           else None)
        if chosen not in splits:
            raise DataFormatError(f"{source}: no split '{chosen or 'train'}' (splits: "
                                  f"{', '.join(splits)}); pick one with {path}:SPLIT")
        loaded, split = loaded[chosen], chosen
    elif split:
        raise DataFormatError(f"{source}: a single dataset without splits; drop ':{split}'")
    for index, row in enumerate(loaded):
        yield f"{path}[{split or 'data'}][{index}]", _plain(row)


def _plain(value: Any) -> Any:
    """Rows as plain JSON-like values (NumPy scalars from Arrow become Python numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value

