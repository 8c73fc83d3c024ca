"""Puts this folder on sys.path so tests import ``models_testutil`` (pytest runs with
``--import-mode=importlib``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from models_testutil import load  # noqa: E402,F401  (the fixture)
