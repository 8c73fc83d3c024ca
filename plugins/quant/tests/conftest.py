"""Shared fixtures (helpers live in quant_testutil.py): the bundled demo model, its tokenizer, small calibration and held-out sets."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for quant_testutil

import paddlellm  # noqa: E402
from quant_testutil import DEMO  # noqa: E402


@pytest.fixture(scope="session")
def demo_path() -> str:
    return str(DEMO)


@pytest.fixture(scope="session")
def tokenizer():
    return paddlellm.AutoTokenizer.from_pretrained(DEMO)


@pytest.fixture(scope="session")
def calibration(tokenizer):
    """16 blocks of 128 tokens of demo training text, in batches of 8."""
    from paddlellm_quant.calibration import batches, demo_texts, encode_texts, token_blocks

    blocks = token_blocks(encode_texts(tokenizer, demo_texts(16 * 16, "train")), 128, 16)
    return batches(blocks, 8)


@pytest.fixture(scope="session")
def tiny_calibration(calibration):
    """Two blocks of 32 tokens: enough to exercise a calibrated quantizer quickly."""
    return [calibration[0][:2, :32]]


@pytest.fixture(scope="session")
def heldout_ids(tokenizer):
    from paddlellm_quant.calibration import demo_texts, encode_texts

    return encode_texts(tokenizer, demo_texts(128, "eval"))
