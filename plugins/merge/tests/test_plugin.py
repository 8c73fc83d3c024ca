"""The distribution registers its methods and command through the hooks."""
from __future__ import annotations

from paddlellm.interfaces import MergeMethod
from paddlellm.plugin.manager import PluginManager

NAMES = {"linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties", "della",
         "della_linear"}


def test_methods_registered_and_follow_the_protocol():
    registry = PluginManager().registry
    entries = {e.name: e for e in registry.entries("merge_method")}
    assert NAMES <= set(entries)
    for name in NAMES:
        assert entries[name].distribution == "paddlellm-merge"
        method = entries[name].load()
        assert isinstance(method, MergeMethod) and method.name == name
        assert method.needs_base == (name not in ("linear", "slerp"))


def test_methods_pickle_by_identity():
    import pickle

    from paddlellm_merge.methods.task_arithmetic import DELLA, TIES

    assert pickle.loads(pickle.dumps(TIES)) is TIES
    assert pickle.loads(pickle.dumps(DELLA)) is DELLA
