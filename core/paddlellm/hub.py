"""Model ids from the Hugging Face Hub: ``Qwen/Qwen2.5-0.5B-Instruct`` -> a local folder.

:func:`resolve_model_path` is the one place a model name or path becomes a directory: a local
folder always wins; otherwise a name shaped like a Hub id (``org/name`` or ``name``) is
downloaded with ``huggingface_hub.snapshot_download`` into its cache (``HF_HOME`` /
``HF_HUB_CACHE``, shared with every other Hub tool) with its progress bars, or read from that
cache when ``HF_HUB_OFFLINE=1``. Only the files a checkpoint needs are fetched (config,
tokenizer, safetensors weights; PyTorch ``.bin`` weights only when a repository has no
safetensors). Failures are :class:`ModelNotFoundError` with a message that says what to do.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import PaddleLLMError

#: what a checkpoint directory needs (weights added below)
CHECKPOINT_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
SAFETENSORS = ["*.safetensors"]
TORCH_BIN = ["*.bin"]

# ``org/name`` or ``name`` (letters, digits, '-', '_', '.'; no '..'; at most 96 characters)
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")

_resolved: dict[str, str] = {}  # hub id -> snapshot folder, once per process


class ModelNotFoundError(PaddleLLMError, FileNotFoundError):
    """Neither a local folder nor a model the Hub (or its offline cache) provides."""


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is shaped like a Hub repository id (and is not a path)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value (as ``huggingface_hub`` reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> str:
    """The Hub cache folder, read from the environment at call time (``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), as ``huggingface_hub`` defines it."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def resolve_model_path(name_or_path: str | os.PathLike, *, revision: str | None = None) -> str:
    """A local checkpoint folder for ``name_or_path``.

    A local folder is returned as given. A Hub id is downloaded (or found in the cache) and
    its snapshot folder returned. Anything else is a :class:`ModelNotFoundError`.
    """
    text = os.fspath(name_or_path)
    if Path(text).is_dir():
        return text
    if not is_hub_id(text):
        raise ModelNotFoundError(f"model folder not found: {text}")
    key = f"{hub_cache_dir()}:{text}@{revision or 'main'}"
    if key not in _resolved:
        _resolved[key] = _download(text, revision)
    return _resolved[key]


def _download(repo_id: str, revision: str | None) -> str:
    try:
        import huggingface_hub as hf
        from huggingface_hub import errors as hf_errors
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ModelNotFoundError(f"'{repo_id}' is not a local folder, and huggingface_hub (needed "
                                 f"to download Hub models) is not installed: {exc}") from None
    cache = hub_cache_dir()
    where = f"the Hugging Face cache ({cache})"
    try:
        folder = hf.snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                      allow_patterns=CHECKPOINT_FILES + SAFETENSORS,
                                      local_files_only=offline())
        if not any(Path(folder).glob("*.safetensors")):  # an older repository: .bin weights
            folder = hf.snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                          allow_patterns=CHECKPOINT_FILES + TORCH_BIN,
                                          local_files_only=offline())
    except hf_errors.GatedRepoError:
        raise ModelNotFoundError(f"'{repo_id}' is a gated model on the Hugging Face Hub: accept "
                                 "its terms on huggingface.co and log in (`hf auth login`, or set "
                                 "HF_TOKEN)") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(f"'{repo_id}' is neither a local folder nor a model on the "
                                 "Hugging Face Hub (a private model needs `hf auth login` or "
                                 "HF_TOKEN)") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"'{repo_id}' has no revision '{revision}' on the Hugging Face "
                                 "Hub") from None
    except hf_errors.LocalEntryNotFoundError:
        if offline():
            raise ModelNotFoundError(
                f"'{repo_id}' is not a local folder and not in {where}, and HF_HUB_OFFLINE is "
                f"set, so nothing is downloaded: unset HF_HUB_OFFLINE (or download it where "
                f"there is a network: `hf download {repo_id}`), or pass a local folder") from None
        raise ModelNotFoundError(
            f"'{repo_id}' is not a local folder and not in {where}, and the Hugging Face Hub "
            f"cannot be reached to download it (no network?); pass a local folder, or set "
            f"HF_ENDPOINT to a mirror") from None
    except (OSError, hf_errors.HfHubHTTPError) as exc:
        raise ModelNotFoundError(f"downloading '{repo_id}' from the Hugging Face Hub failed: "
                                 f"{exc}") from None
    if not (Path(folder) / "config.json").is_file():
        raise ModelNotFoundError(f"'{repo_id}' on the Hugging Face Hub has no config.json at its "
                                 "top level: it is not a transformers checkpoint")
    return folder
