"""Helpers shared by the merge plugin's tests (fixtures made by
scripts/fixtures/make_merge_fixtures.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
EXPECTED = os.path.join(FIXTURES, "expected")


def fx(*parts: str) -> str:
    return os.path.join(FIXTURES, *parts)


def read_all(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory or .safetensors file, floats as float32."""
    from paddlellm_merge.io import Reader

    r = Reader(path)
    return {k: r.get(k) for k in r.keys()}


def expected(name: str) -> dict[str, np.ndarray]:
    return read_all(os.path.join(EXPECTED, name + ".safetensors"))


def assert_state_close(got: dict, want: dict, atol: float = 2e-6, rtol: float = 1e-5) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=atol, rtol=rtol, err_msg=k)


@pytest.fixture
def quiet():
    lines: list[str] = []
    return lines.append
