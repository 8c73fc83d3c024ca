"""Shared helpers: the transformers fixtures of ``scripts/fixtures/make_model_fixtures.py``."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.npz"))


@lru_cache(maxsize=None)
def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (b is the reference)."""
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="session")
def load():
    """``load(name, dtype="float32")`` -> our model for fixture ``name`` (cached per dtype)."""
    from paddlellm import AutoModelForCausalLM

    cache = {}

    def _load(name: str, dtype: str = "float32"):
        if (name, dtype) not in cache:
            cache[name, dtype] = AutoModelForCausalLM.from_pretrained(FIXTURES / name, dtype=dtype)
        return cache[name, dtype]

    return _load
