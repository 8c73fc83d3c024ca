"""Puts this folder on sys.path so tests import ``align_testutil`` (pytest runs with
``--import-mode=importlib``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
