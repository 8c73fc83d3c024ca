"""Tensor parallel through Paddle's auto-parallel API (``paddle.distributed.parallelize``).

The processes form a ``(dp, mp)`` ``ProcessMesh``: ``tensor_parallel_degree`` consecutive
processes (a row, the ``mp`` axis) split one model replica, and the rows are data-parallel
replicas. In every decoder layer the input projections (``q/k/v_proj``, ``gate/up_proj``)
are split column-wise (each process holds a slice of the output features) and the output
projections (``o_proj``, ``down_proj``) row-wise (a slice of the input features, partial
sums all-reduced). Embeddings, norms and ``lm_head`` stay replicated. Auto-parallel tensors
keep a global view, so the model code is unchanged and the numbers match one process.
Start it with Paddle's launcher::

    python -m paddle.distributed.launch --nproc_per_node 2 $(which llm) run --strategy tensor_parallel ...
    ... --nproc_per_node 4 ... --strategy tensor_parallel --tensor_parallel_degree 2   # 2 replicas x 2

:attr:`world_size` and :attr:`rank` are those of the data-parallel axis (the replicas, which
read different batches); :attr:`process_count` / :attr:`process_rank` are the launcher's.
Weights are split, so writing a checkpoint is a collective: :meth:`save_pretrained` must be
called on every process (only process 0 writes).
"""
from __future__ import annotations

import contextlib

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
                                "processes; fewer: the rest are data-parallel replicas)")


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


def _add_batch_hooks(model, mesh, data_degree: int) -> None:
    """Data parallel on the mesh's ``dp`` axis for a model fed per-process batches.

    The loop gives each replica its own batch as plain tensors; the pre-hook declares them
    the replica's rows of a global batch (``Shard(0)`` over ``dp``), so auto-parallel averages
    gradients across replicas. The post-hook hands back the replica's own rows of the output,
    which the stage's loss pairs with its plain labels; that loss is a per-replica mean, so
    its gradient is scaled by ``1 / data_degree`` (the global mean's).
    """
    import paddle
    import paddle.distributed as dist
    from paddle.distributed.auto_parallel.api import dtensor_from_local, dtensor_to_local

    placements = [dist.Shard(0), dist.Replicate()]

    def to_global(value):
        if isinstance(value, paddle.Tensor) and value.ndim > 0 and not value.is_dist():
            return dtensor_from_local(value, mesh, placements)  # (b, ...) -> (dp*b, ...)
        return value

    def pre_hook(layer, args, kwargs):
        return tuple(to_global(a) for a in args), {k: to_global(v) for k, v in kwargs.items()}

    def post_hook(layer, args, kwargs, output):
        if not (isinstance(output, paddle.Tensor) and output.is_dist()):
            return output
        local = dtensor_to_local(output, mesh, placements)  # (dp*b, ...) -> (b, ...)
        if not local.stop_gradient:
            local.register_hook(lambda grad: grad / data_degree)
        return local

    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    model.register_forward_post_hook(post_hook, with_kwargs=True)


def _single_process_save_error(*args: Any, **kwargs: Any) -> None:
    raise CollectiveSaveError(
        "a tensor-parallel model's weights are split over processes: save it with "
        "TensorParallelStrategy.save_pretrained(model, directory), or inside "
        "`with strategy.gathered(model):`, entered on every process")


class TensorParallelStrategy:
    """Column/row-wise split projections over the ``mp`` axis of a ``(dp, mp)`` ProcessMesh."""

    name = "tensor_parallel"
    config_class = TensorParallelOptions

    def __init__(self, options: TensorParallelOptions | None = None) -> None:
        self.options = options or TensorParallelOptions()
        self.process_count, self.process_rank = 1, 0
        self.degree, self.data_degree = 1, 1
        self.mesh = None

    def setup(self, backend: Any) -> None:
        self.process_count, self.process_rank = _dist.require_launcher(self.name)
        self.degree = self.options.tensor_parallel_degree or self.process_count
        if self.process_count % self.degree:
            raise ConfigError(f"tensor_parallel_degree {self.degree} must divide the number of "
                              f"launched processes ({self.process_count})")
        self.data_degree = self.process_count // self.degree
        if self.process_count == 1:
            warnings.warn("tensor_parallel with one process: this runs like --strategy single",
                          stacklevel=2)
            return
        import numpy as np
        import paddle.distributed as dist

        _dist.init_process_group()
        # row r of the mesh: the processes that split one replica (consecutive ranks)
        ranks = np.arange(self.process_count).reshape(self.data_degree, self.degree)
        self.mesh = dist.ProcessMesh(ranks.tolist(), dim_names=["dp", "mp"])

    @property
    def world_size(self) -> int:
        return self.data_degree  # replicas reading different batches

    @property
    def rank(self) -> int:
        return self.process_rank // self.degree  # this process's replica

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
        if self.data_degree > 1:
            _add_batch_hooks(model, self.mesh, self.data_degree)
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
        # the processes of one replica read the same examples
        return _dist.strided(items, self.data_degree, self.rank)

    def all_reduce_mean(self, value: float) -> float:
        # the processes of a replica hold equal values: the mean over all is the mean over replicas
        return _dist.all_reduce_mean(value, self.process_count)

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
                value = dist.reshard(value, self.mesh, [dist.Replicate()] * 2)._local_value()
            state[key] = value
        return state

    @property
    def can_checkpoint(self) -> bool:
        """Intermediate checkpoints would hold this process's optimizer shard only."""
        return self.mesh is None

    @contextlib.contextmanager
    def gathered(self, model):
        """Collective (enter on every process): inside, process 0's ``model.save_pretrained``
        writes the full, unsplit weights (a plain copy built from the gathered state)."""
        if self.mesh is None:
            yield model
            return
        from paddlellm.api import is_peft_model

        if is_peft_model(model):
            raise CollectiveSaveError("saving adapters trained under tensor_parallel is not "
                                      "supported; train adapters with --strategy data_parallel")
        state = self.full_state_dict(model)
        if self.is_main_process:
            full = type(model)(model.config, model.family)  # plain, unsplit
            full.set_state_dict(state)
            model.save_pretrained = full.save_pretrained
        try:
            yield model
        finally:
            if self.is_main_process:
                model.save_pretrained = _single_process_save_error
            self.barrier()

    def save_pretrained(self, model, directory: str, **kwargs: Any) -> None:
        """Write a Hugging Face checkpoint of the full model — collective: call it on every
        process; process 0 writes."""
        state = self.full_state_dict(model)
        if self.is_main_process:
            full = type(model)(model.config, model.family)  # plain, unsplit
            full.set_state_dict(state)
            full.save_pretrained(directory, **kwargs)
        self.barrier()
