"""Errors raised by checkpoint I/O; each message names the file involved."""
from __future__ import annotations

from ..errors import PaddleLLMError


class CheckpointError(PaddleLLMError):
    """Base class of checkpoint reading / writing errors."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No weights where a checkpoint was expected; the message lists what was looked for."""


class CheckpointFormatError(CheckpointError, ValueError):
    """A weights file is malformed, truncated or of an unsupported kind."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint references a global outside the state-dict allow-list.

    Nothing from the file is executed: the unpickler refuses to even look the global up.
    """
