"""Training: composing a run (:mod:`.compose`), the session every stage shares and the
built-in stages, and the parts they are built from: the loop (:mod:`.loop`), losses, the
optimizer and schedules (:mod:`.optim`, :mod:`.adamw`), training state and checkpoints with
exact resume (:mod:`.state`, :mod:`.checkpointing`) and metrics.

Importing this package imports no Paddle: the session and the loop import it on first use.

A stage (kind ``stage``, hook ``register_stages``) is a function ``stage(ctx) -> summary``
written as a short recipe on :class:`TrainingSession`: its data, its step loss, its
evaluation and its summary fields (``docs/plugins.md``, "Writing a stage").
"""
from .session import Demo, FitResult, TrainingSession
from .start import resolve_run_model

__all__ = ["Demo", "FitResult", "TrainingSession", "resolve_run_model"]
