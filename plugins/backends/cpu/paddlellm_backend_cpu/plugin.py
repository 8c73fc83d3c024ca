"""Registers the ``cpu`` backend (the module behind it imports Paddle only when used)."""
from paddlellm.api import hookimpl


@hookimpl
def register_backends(register):
    register("cpu", "paddlellm_backend_cpu.backend:backend", priority=0,
             description="CPU through paddlepaddle (oneDNN); float32")
