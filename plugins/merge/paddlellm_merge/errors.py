"""The merge plugin's error: printed by ``llm`` without a traceback."""
from __future__ import annotations

from paddlellm.errors import PaddleLLMError


class MergeError(PaddleLLMError, ValueError):
    """A merge cannot run as asked (mismatched models, bad parameter, missing base...)."""
