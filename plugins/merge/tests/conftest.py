"""Puts this folder on sys.path so tests import ``merge_testutil`` (pytest runs with
``--import-mode=importlib``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from merge_testutil import quiet  # noqa: E402,F401  (the fixture)
