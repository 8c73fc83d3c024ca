"""Training: the session every stage shares and the built-in stages.

A stage (kind ``stage``, hook ``register_stages``) is a function ``stage(ctx) -> summary``
written as a short recipe on :class:`TrainingSession`: its data, its step loss, its
evaluation and its summary fields (``docs/plugins.md``, "Writing a stage").
"""
from .session import Demo, FitResult, TrainingSession
from .start import resolve_run_model

__all__ = ["Demo", "FitResult", "TrainingSession", "resolve_run_model"]
