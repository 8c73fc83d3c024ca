"""Registers the ``gpu`` backend (CUDA through paddlepaddle-gpu)."""
from paddlellm.api import hookimpl


@hookimpl
def register_backends(register):
    register("gpu", "paddlellm_backend_gpu.backend:backend", priority=100,
             description="NVIDIA GPUs through paddlepaddle-gpu (CUDA build)")
