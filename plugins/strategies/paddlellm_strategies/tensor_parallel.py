"""Tensor parallel through Paddle's auto-parallel API (``paddle.distributed.parallelize``).

The processes form a one-dimensional ``ProcessMesh``; in every decoder layer the input
projections (``q/k/v_proj``, ``gate/up_proj``) are split column-wise (each process holds a
slice of the output features) and the output projections (``o_proj``, ``down_proj``)
row-wise (a slice of the input features, partial sums all-reduced). Embeddings, norms and
``lm_head`` stay replicated. Auto-parallel tensors keep a global view, so the model code is
unchanged and the numbers match one process. Start it with Paddle's launcher::

    python -m paddle.distributed.launch --nproc_per_node 2 $(which llm) run --strategy tensor_parallel ...

Every process trains on the same batches: :attr:`world_size` and :attr:`rank` are those of
the data-parallel dimension (1 and 0); :attr:`process_count` / :attr:`process_rank` are the
launcher's. Weights are split, so writing a checkpoint is a collective:
:meth:`save_pretrained` must be called on every process (only process 0 writes).
"""
from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from paddlellm.errors import ConfigError, PaddleLLMError

from . import _dist

COLUMN_WISE = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_WISE = ("o_proj", "down_proj")


class TensorParallelOptions(BaseModel):
    """Options of ``--strategy tensor_parallel``."""

    model_config = ConfigDict(extra="forbid")

    tensor_parallel_degree: int | None = Field(
        None, ge=1, description="processes a layer is split over (default: all launched "
                                "processes; combining with data parallel is not supported yet)")


def parallelize_plan(model, degree: int) -> dict[str, Any]:
    """``{sublayer name: ColWiseParallel() | RowWiseParallel()}`` for the decoder's projections.

    Raises :class:`ConfigError` when a split dimension is not divisible by ``degree``.
    """
    import paddle.distributed as dist

    plan: dict[str, Any] = {}
    for name, layer in model.named_sublayers():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in COLUMN_WISE + ROW_WISE:
            continue
        n_in, n_out = layer.weight.shape  # paddle Linear weight: (in, out)
        split = n_out if leaf in COLUMN_WISE else n_in
        if split % degree:
            raise ConfigError(f"tensor_parallel_degree {degree} does not divide {name} "
                              f"({'output' if leaf in COLUMN_WISE else 'input'} features {split})")
        # exact names: the plan keys are matched as regular expressions
        key = "^" + name.replace(".", r"\.") + "$"
        plan[key] = dist.ColWiseParallel() if leaf in COLUMN_WISE else dist.RowWiseParallel()
    if not plan:
        raise ConfigError("tensor_parallel found no q/k/v/o or gate/up/down projections to "
                          "split in this model")
    return plan


class CollectiveSaveError(PaddleLLMError, RuntimeError):
    """A tensor-parallel model was saved from one process (saving needs all of them)."""


def _single_process_save_error(*args: Any, **kwargs: Any) -> None:
    raise CollectiveSaveError(
        "a tensor-parallel model's weights are split over processes: save it with "
        "TensorParallelStrategy.save_pretrained(model, directory) called on every process "
        "(llm run's stages save on process 0 only, so they cannot write tensor-parallel "
        "checkpoints yet)")


class TensorParallelStrategy:
    """Column/row-wise split projections over a ProcessMesh of all processes."""

    name = "tensor_parallel"
    config_class = TensorParallelOptions

    def __init__(self, options: TensorParallelOptions | None = None) -> None:
        self.options = options or TensorParallelOptions()
        self.process_count, self.process_rank = 1, 0
        self.degree = 1
        self.mesh = None

    def setup(self, backend: Any) -> None:
        self.process_count, self.process_rank = _dist.require_launcher(self.name)
        self.degree = self.options.tensor_parallel_degree or self.process_count
        if self.degree != self.process_count:
            raise ConfigError(f"tensor_parallel_degree {self.degree} must equal the number of "
                              f"launched processes ({self.process_count}); mixing tensor and "
                              "data parallel is not supported yet")
        if self.degree == 1:
            warnings.warn("tensor_parallel with one process: this runs like --strategy single",
                          stacklevel=2)
            return
        import paddle.distributed as dist

        _dist.init_process_group()
        self.mesh = dist.ProcessMesh(list(range(self.degree)), dim_names=["mp"])

    @property
    def world_size(self) -> int:
        return 1  # the data-parallel size: every process sees the same batches

    @property
    def rank(self) -> int:
        return 0

    @property
    def is_main_process(self) -> bool:
        return self.process_rank == 0

    def wrap_model(self, model):
        if self.mesh is None:
            return model
        import paddle.distributed as dist

        plan = parallelize_plan(model, self.degree)
        model, _ = dist.parallelize(model, None, mesh=self.mesh,
                                    config={"mp_config": {"parallelize_plan": plan}})
        if hasattr(model, "save_pretrained"):
            # a rank-0-only save would wait forever for the other processes' shards
            model.save_pretrained = _single_process_save_error
        return model

    def wrap_optimizer(self, optimizer):
        if self.mesh is None:
            return optimizer
        import paddle.distributed as dist

        return dist.shard_optimizer(optimizer)

    def shard(self, items: list) -> list:
        return list(items)  # tensor parallel splits the model, not the data

    def all_reduce_mean(self, value: float) -> float:
        return float(value)  # every process computed the same (replicated) loss

    def barrier(self) -> None:
        _dist.barrier(self.process_count)

    # --- weights ---------------------------------------------------------------------------

    def full_state_dict(self, model) -> dict[str, Any]:
        """Every parameter and buffer gathered to its full (replicated) value — collective:
        call it on every process."""
        import paddle.distributed as dist

        state = {}
        for key, value in model.state_dict().items():
            if self.mesh is not None and value.is_dist():
                value = dist.reshard(value, self.mesh, [dist.Replicate()])._local_value()
            state[key] = value
        return state

    def save_pretrained(self, model, directory: str, **kwargs: Any) -> None:
        """Write a Hugging Face checkpoint of the full model — collective: call it on every
        process; process 0 writes."""
        state = self.full_state_dict(model)
        if self.is_main_process:
            full = type(model)(model.config, model.family)  # plain, unsplit
            full.set_state_dict(state)
            full.save_pretrained(directory, **kwargs)
        self.barrier()
