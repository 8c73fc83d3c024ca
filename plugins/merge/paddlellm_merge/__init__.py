"""Model merging (linear, slerp, task arithmetic, ties, dare, della) for paddlellm.

Streams safetensors tensor by tensor in NumPy (no Paddle needed). Python API::

    from paddlellm_merge import MergeSpec, ModelInput, merge, merge_adapters
"""
from __future__ import annotations

__all__ = ["MergeSpec", "ModelInput", "merge", "merge_adapters", "spec_from_yaml", "MergeError"]


def __getattr__(name):  # lazy: importing the package stays cheap
    if name in ("MergeSpec", "ModelInput", "spec_from_yaml"):
        from . import spec

        return getattr(spec, name)
    if name == "merge":
        from .engine import merge

        return merge
    if name == "merge_adapters":
        from .adapters import merge_adapters

        return merge_adapters
    if name == "MergeError":
        from .errors import MergeError

        return MergeError
    raise AttributeError(name)
