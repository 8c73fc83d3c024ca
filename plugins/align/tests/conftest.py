"""Puts this folder on sys.path so tests import ``align_testutil`` (pytest runs with
``--import-mode=importlib``); the ``server`` fixture (a local reward server)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server():
    """``start(handler)`` -> a running :class:`align_testutil.RewardServer`; all are closed
    after the test."""
    from align_testutil import RewardServer

    servers = []

    def start(handler):
        servers.append(RewardServer(handler))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
