"""paddlellm: a one-stop LLM suite on PaddlePaddle — a minimal core plus plugins.

Importing this package does not import Paddle; heavy parts load on first use. Plugin
authors import the core through :mod:`paddlellm.api` (the public API, ``docs/plugins.md``).
"""
from __future__ import annotations

import warnings

# Paddle warns on every import that ccache (a C++ build cache) is missing; it only matters
# when compiling custom operators, which paddlellm does not do.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from .version import __version__  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402  (plugin authors: ``from paddlellm import hookimpl``)

__all__ = ["__version__", "hookimpl", "AutoModelForCausalLM", "AutoTokenizer"]


def __getattr__(name: str):  # lazy: importing paddlellm must not import Paddle
    if name == "AutoModelForCausalLM":
        from .modeling.auto import AutoModelForCausalLM

        return AutoModelForCausalLM
    if name == "AutoTokenizer":
        from .tokenizer import AutoTokenizer

        return AutoTokenizer
    raise AttributeError(f"module 'paddlellm' has no attribute {name!r}")
