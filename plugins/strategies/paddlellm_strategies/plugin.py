"""Registers the trainer strategies of this distribution."""
from paddlellm import hookimpl


@hookimpl
def register_trainer_strategies(register):
    register("single", "paddlellm_strategies.single:SingleDeviceStrategy",
             description="one process on one device")
