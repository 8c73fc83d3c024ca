"""Devices: parse ``--device`` and set the hardware backend up.

This module sits low in the core: it imports only :mod:`paddlellm.errors`, so the built-in
plugin (:mod:`paddlellm.plugin.builtin`, whose ``select_backend`` hook reads ``--device``), ``llm
run`` and the inference engine all import it without importing each other. The plugin
manager that picks the backend is passed in, never imported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BackendUnavailableError

if TYPE_CHECKING:
    from .manager import PluginManager

__all__ = ["AUTO_VALUES", "parse_device", "setup_device"]

#: ``--device`` values that let the ``select_backend`` hook choose
AUTO_VALUES = (None, "", "auto")


def parse_device(device: str | None) -> tuple[str | None, int]:
    """``"gpu:1"`` -> ``("gpu", 1)``; ``"cpu"`` -> ``("cpu", 0)``; ``"auto"``/``None`` ->
    ``(None, 0)``. A malformed value is a :class:`BackendUnavailableError` naming it."""
    if device in AUTO_VALUES:
        return None, 0
    name, _, index = device.partition(":")
    if not name or (index and not index.isdigit()) or (_ and not index):
        raise BackendUnavailableError(f"bad --device '{device}': expected NAME or NAME:INDEX "
                                      "(cpu, gpu:0, ...) or auto")
    return name, int(index or 0)


def setup_device(device: str | None, manager: "PluginManager") -> str:
    """Select the backend for ``device`` through ``manager``'s ``select_backend`` hook and
    set it up (device index, CPU threads); returns the Paddle device string (``"cpu"``,
    ``"gpu:0"``)."""
    _, index = parse_device(device)
    entry = manager.select_backend(device)
    return entry.load().setup(index)
