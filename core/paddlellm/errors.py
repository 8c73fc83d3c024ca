"""Errors the core raises; each carries a message meant for the user."""
from __future__ import annotations


class PaddleLLMError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(PaddleLLMError, ValueError):
    """A configuration file or flag is invalid (unknown key, bad value)."""


class UnknownPluginError(PaddleLLMError, KeyError):
    """A plugin name that no installed plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicatePluginError(PaddleLLMError):
    """Two plugins of one kind share a name."""


class PluginLoadError(PaddleLLMError, ImportError):
    """A registered plugin's object could not be imported."""


class PluginContractError(PluginLoadError):
    """A plugin's target lacks members its kind's Protocol requires, or a plugin implements a
    hook that does not exist (a misspelt ``register_model``)."""


class BackendUnavailableError(PaddleLLMError, RuntimeError):
    """The requested hardware backend cannot run on this machine."""


class DataFormatError(PaddleLLMError, ValueError):
    """A data file has a malformed record; the message names file and line."""
