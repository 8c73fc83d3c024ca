"""Pipeline parallel: registered so that ``--strategy pipeline_parallel`` fails clearly.

Measured with Paddle 3.3.1 on CPU (two processes, gloo):

* fleet ``PipelineLayer`` + ``train_batch``: ``ProcessGroupGLOO does not support send with
  sync_op and use_calc_stream flag`` (the 1F1B schedule's point-to-point sends), after
  ``ParallelEnv`` already lacks a device id on CPU;
* auto-parallel ``paddle.distributed.parallelize`` with ``pp_config``: the cross-mesh reshard
  between stages crashes (segmentation fault in ``SameStatusReshardFunction``).

So pipeline parallelism is GPU/XPU-only in Paddle. paddlellm does not run it there yet
either: it needs the decoder expressed as a fleet ``PipelineLayer`` and a loop step that
calls ``train_batch``, which could not be built or tested on the CPU-only machine this was
written on. Use ``tensor_parallel`` (splits every layer) or ``data_parallel`` instead.
"""
from __future__ import annotations

from typing import Any

from paddlellm.errors import BackendUnavailableError

from .single import SingleDeviceStrategy

CPU_REASON = ("Paddle implements pipeline parallelism for GPU/XPU only: on CPU its gloo "
              "process group has no calc-stream send/recv (fleet PipelineLayer) and "
              "auto-parallel's cross-stage reshard crashes")


class PipelineParallelStrategy(SingleDeviceStrategy):
    """Pipeline parallel (GPU/XPU in Paddle; not implemented in paddlellm yet).

    ``setup`` always raises; the rest of the strategy interface is single's, so the object
    still satisfies ``TrainerStrategy``.
    """

    name = "pipeline_parallel"

    def setup(self, backend: Any) -> None:
        import paddle

        device = paddle.get_device()
        if device.partition(":")[0] not in ("gpu", "xpu"):
            raise BackendUnavailableError(
                f"--strategy pipeline_parallel cannot run on '{device}': {CPU_REASON}. "
                "Use --strategy tensor_parallel or data_parallel on CPU.")
        raise BackendUnavailableError(
            "--strategy pipeline_parallel is not implemented in paddlellm yet (Paddle's "
            "pipeline schedule needs the decoder as a fleet PipelineLayer); use "
            "--strategy tensor_parallel, data_parallel or sharding on GPU")
