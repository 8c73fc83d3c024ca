"""Registers the trainer strategies of this distribution and ``llm launch`` (no Paddle import)."""
from paddlellm.api import hookimpl

_P = "paddlellm_strategies."


@hookimpl
def register_trainer_strategies(register):
    register("single", _P + "single:SingleDeviceStrategy",
             description="one process on one device")
    register("data_parallel", _P + "data_parallel:DataParallelStrategy",
             description="replicas + averaged gradients (paddle.DataParallel; CPU gloo or GPU)")
    register("tensor_parallel", _P + "tensor_parallel:TensorParallelStrategy",
             description="column/row-wise split projections (auto-parallel; CPU or GPU)")
    register("sharding", _P + "sharding:ShardingStrategy",
             description="ZeRO stage 1/2/3 (group_sharded_parallel; GPU/XPU only)")
    register("pipeline_parallel", _P + "pipeline:PipelineParallelStrategy",
             description="pipeline stages (Paddle: GPU/XPU only; not implemented yet)")


@hookimpl
def register_commands(app):
    from .launch import add_launch_command

    add_launch_command(app)
