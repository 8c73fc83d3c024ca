"""The CUDA GPU backend. Active when the installed Paddle is a CUDA build and sees a GPU.

paddlepaddle-gpu is published on Paddle's own package index, not PyPI; see this
distribution's README for the install command.
"""
from __future__ import annotations

from typing import Any

INSTALL_HINT = (
    "install Paddle's CUDA build, e.g. `pip uninstall -y paddlepaddle && pip install "
    "paddlepaddle-gpu==3.3.1 -i https://www.paddlepaddle.org.cn/packages/stable/cu126/`"
)


class GPUBackend:
    name = "gpu"
    priority = 100
    device_type = "gpu"

    def _paddle(self):
        try:
            import paddle
        except ImportError:
            return None
        return paddle

    def is_available(self) -> bool:
        return not self.unavailable_reason()

    def unavailable_reason(self) -> str:
        paddle = self._paddle()
        if paddle is None:
            return f"Paddle is not installed; {INSTALL_HINT}"
        if not paddle.is_compiled_with_cuda():
            return f"the installed Paddle {paddle.__version__} is a CPU build; {INSTALL_HINT}"
        if paddle.device.cuda.device_count() == 0:
            return "Paddle is a CUDA build but sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)"
        return ""

    def device_count(self) -> int:
        paddle = self._paddle()
        if paddle is None or not paddle.is_compiled_with_cuda():
            return 0
        return paddle.device.cuda.device_count()

    def setup(self, device_index: int = 0) -> str:
        import paddle

        device = f"gpu:{device_index}"
        paddle.set_device(device)
        return device

    def _capability(self, index: int = 0) -> tuple[int, int]:
        import paddle

        return tuple(paddle.device.cuda.get_device_capability(index))

    def supports_dtype(self, dtype: str, training: bool = False) -> bool:
        if dtype in ("float32", "float16"):
            return True
        if dtype == "bfloat16":
            return self._capability() >= (8, 0)
        return False

    def info(self) -> dict[str, Any]:
        paddle = self._paddle()
        if paddle is None:
            return {"paddle": None}
        out: dict[str, Any] = {"paddle": paddle.__version__,
                               "cuda_build": bool(paddle.is_compiled_with_cuda())}
        if out["cuda_build"]:
            out["cuda"] = paddle.version.cuda()
            out["devices"] = [paddle.device.cuda.get_device_name(i)
                              for i in range(self.device_count())]
        return out


backend = GPUBackend()
