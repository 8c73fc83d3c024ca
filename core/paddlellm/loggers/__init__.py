"""Training loggers: where a run's metrics go (``llm run --loggers NAME,...``).

Each logger follows :class:`paddlellm.interfaces.TrainingLogger` and is registered through the
``register_loggers`` hook, as a third-party logger would be. Built in (:mod:`paddlellm.plugin.builtin`):

* ``jsonl`` — ``output_dir/metrics.jsonl``, one JSON object per record; always on;
* ``tensorboard`` — TensorBoard event files (the ``tensorboard`` package's own
  ``EventFileWriter``) under ``--logging_dir`` (default ``output_dir/runs``);
* ``visualdl`` — VisualDL records (VisualDL's ``LogWriter``) under the same folder;
* ``plot`` — ``output_dir/loss.png``: train/eval loss and learning rate (matplotlib, Agg),
  drawn at every checkpoint and at the end.

The libraries are optional extras (``pip install 'paddlellm[tensorboard]'``, ``[visualdl]``,
``[plot]``); a logger whose library is missing fails when the run starts, naming the command.
This module holds what they share: the logging folder, HF/PaddleNLP-style scalar tags and the
missing-library error. Importing it imports neither Paddle nor any logging library.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ConfigError

#: logger name -> (module to import, the pip command that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "pip install 'paddlellm[tensorboard]'"),
    "visualdl": ("visualdl", "pip install 'paddlellm[visualdl]'"),
    "plot": ("matplotlib", "pip install 'paddlellm[plot]'"),
}


def require(logger: str, module: str | None = None) -> Any:
    """Import the library ``logger`` writes with, or a :class:`ConfigError` naming the pip
    command that installs it."""
    name, command = EXTRAS.get(logger, (module, f"pip install {module}"))
    module = module or name
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"--loggers {logger}: the '{module}' package is not installed "
                          f"({exc}); install it with `{command}`") from None


def check_installed(names: Any) -> None:
    """Raise the ``pip install`` error for a built-in logger among ``names`` whose library is
    missing, before a run loads its model (the loggers themselves start later)."""
    import importlib.util

    for name in names:
        if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None:
            require(name)


def installed_loggers(registry: Any) -> list[str]:
    """``--loggers all`` (``report_to: all``): every registered logger but ``jsonl`` (always on)
    whose library is installed (a built-in whose extra is missing is left out)."""
    import importlib.util

    names = []
    for name in registry.names("logger"):
        module = EXTRAS.get(name, (None,))[0]
        if name != "jsonl" and (module is None or importlib.util.find_spec(module) is not None):
            names.append(name)
    return names


def build_loggers(config: Any, registry: Any, output_dir: str | Path) -> list[Any]:
    """The loggers ``config.loggers`` names (:class:`paddlellm.plugin.config.RunConfig`), each built
    by its registered factory with its options and started (``on_start(config, output_dir)``).

    A factory's result is checked against :class:`paddlellm.interfaces.TrainingLogger`; a
    logger whose library is missing raises the error naming its ``pip install`` command."""
    from ..errors import PluginContractError
    from ..interfaces import TrainingLogger
    from ..kinds import missing_members, options_key

    names = list(config.loggers)
    if "all" in names:  # a config built without the registry
        names = [n for n in names if n != "all"] + [n for n in installed_loggers(registry)
                                                   if n not in names]
    out = []
    for name in names:
        entry = registry.get("logger", name)
        logger = entry.load()(config.plugin_options.get(options_key("logger", entry.name)))
        missing = missing_members(logger, TrainingLogger)
        if missing:
            raise PluginContractError(
                f"{entry.who()}: its factory returned a {type(logger).__name__} that does not "
                f"follow paddlellm.interfaces.TrainingLogger: missing {', '.join(missing)}")
        logger.on_start(config, str(output_dir))
        out.append(logger)
    return out


def logging_dir(config: Any, output_dir: str | Path) -> Path:
    """Where event files go: ``--logging_dir``, else ``output_dir/runs`` (made if missing).

    One fixed folder per output directory (not one per launch, as Hugging Face's default
    ``runs/<date>_<host>``), so a resumed run continues the same curves."""
    folder = getattr(config, "logging_dir", None)
    path = Path(folder) if folder else Path(output_dir) / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def scalar_tag(key: str) -> str:
    """The dashboard tag of a metric, as Hugging Face's and PaddleNLP's callbacks name them:
    ``eval_loss`` -> ``eval/loss``, ``loss`` -> ``train/loss``, ``lr`` ->
    ``train/learning_rate``, ``tokens_per_sec`` -> ``train/tokens_per_sec``."""
    for prefix in ("eval", "test"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1:]}"
    if key == "lr":
        key = "learning_rate"
    return f"train/{key}"


def scalars(metrics: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for the finite numbers of a record (strings, lists, bools and the
    ``time`` stamp skipped)."""
    for key, value in metrics.items():
        if key in ("step", "time") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            yield scalar_tag(key), float(value)
