"""The family objects (Paddle-free), by name."""
from __future__ import annotations

from functools import lru_cache

from paddlellm.api import import_target

from .families import FAMILIES


@lru_cache(maxsize=1)
def family_objects() -> dict:
    return {name: import_target(target) for name, target in FAMILIES.items()}


def family_for_model_type(model_type: str):
    for family in family_objects().values():
        if model_type in family.model_types:
            return family
    return None
