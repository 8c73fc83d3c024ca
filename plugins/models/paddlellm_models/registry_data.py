"""The family objects (Paddle-free), by name."""
from __future__ import annotations

from functools import lru_cache

from paddlellm.api import import_target

from .families import FAMILIES


@lru_cache(maxsize=1)
def family_objects() -> dict:
    return {name: import_target(target) for name, target in FAMILIES.items()}


def family_for_model_type(model_type: str, hf=None, source=None):
    """The family loading ``model_type`` (None if none does); families sharing one
    (ChatGLM-6B, ChatGLM2/3) are told apart by ``hf`` (see :func:`paddlellm.modeling.auto.choose_family`)."""
    from paddlellm.api import choose_family

    matches = [f for f in family_objects().values() if model_type in f.model_types]
    return choose_family(matches, model_type, hf, source) if matches else None
