"""``llm doctor``: what is installed, what runs here, and what is missing."""
from __future__ import annotations

import platform
import sys
from typing import Any

from ..version import __version__
from ..interfaces import AttentionSpec
from .manager import PluginManager

#: plugin kinds a training run cannot do without
REQUIRED_KINDS = {
    "model": "no model family is installed (pip install paddlellm-models)",
    "trainer_strategy": "no trainer strategy is installed (pip install paddlellm-strategies)",
}


def _paddle_info() -> dict[str, Any]:
    try:
        import paddle
    except ImportError as exc:
        return {"installed": False, "error": str(exc)}
    info: dict[str, Any] = {"installed": True, "version": paddle.__version__,
                            "cuda_build": bool(paddle.is_compiled_with_cuda())}
    if info["cuda_build"]:
        info["cuda"] = paddle.version.cuda()
    return info


def diagnose(manager: PluginManager) -> dict[str, Any]:
    """A JSON-able report; ``report["missing"]`` lists what stops a run."""
    registry = manager.registry
    missing: list[str] = []
    paddle_info = _paddle_info()
    if not paddle_info["installed"]:
        missing.append("Paddle is not installed (pip install paddlellm-backend-cpu, or "
                       "paddlellm-backend-gpu with paddlepaddle-gpu)")

    backends = []
    for entry in registry.entries("backend"):
        row: dict[str, Any] = {"name": entry.name, "distribution": entry.distribution,
                               "priority": entry.priority}
        try:
            backend = entry.load()
            row["available"] = bool(backend.is_available())
            row["reason"] = "" if row["available"] else backend.unavailable_reason()
            if row["available"]:
                row["devices"] = backend.device_count()
                row["info"] = backend.info()
        except Exception as exc:
            row.update(available=False, reason=f"failed: {exc!r}")
        backends.append(row)

    selected = None
    try:
        selected = manager.select_backend(None).name
    except Exception as exc:
        missing.append(str(exc))

    kernel = None
    if selected is not None:
        try:
            kernel = manager.select_attention_kernel(AttentionSpec(), selected).name
        except Exception as exc:
            missing.append(str(exc))

    compiled = _compiled_kernels(registry)

    for kind, message in REQUIRED_KINDS.items():
        if not registry.names(kind):
            missing.append(message)

    return {
        "paddlellm": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "paddle": paddle_info,
        "backends": backends,
        "selected_backend": selected,
        "attention_kernel": kernel,
        "compiled_kernels": compiled,
        "plugins": {kind: registry.names(kind) for kind in registry.kinds()},
        "failed_plugins": [f.as_dict() for f in manager.failed],
        "missing": missing,
    }


def _compiled_kernels(registry) -> list[dict[str, Any]]:
    """Kernels that report their own state (``info()``: a compiled library built or not, and
    why). Never fatal: a kernel that is unavailable declines its calls and the reference
    path runs, so this is shown but not added to ``missing``."""
    rows = []
    for kind in ("attention_kernel", "linear_kernel"):
        for entry in registry.entries(kind):
            row: dict[str, Any] = {"kind": kind, "name": entry.name,
                                   "distribution": entry.distribution}
            try:
                kernel = entry.load()
                if not hasattr(kernel, "info"):
                    continue
                row.update(kernel.info())
            except Exception as exc:
                row.update(available=False, detail=f"failed to load: {exc!r}")
            rows.append(row)
    return rows


def format_report(report: dict[str, Any]) -> str:
    p = report["paddle"]
    if p["installed"]:
        build = f"CUDA {p.get('cuda')}" if p["cuda_build"] else "CPU build"
        paddle_line = f"Paddle {p['version']} ({build})"
    else:
        paddle_line = "Paddle: not installed"
    lines = [f"paddlellm {report['paddlellm']}  Python {report['python']}  {report['platform']}",
             paddle_line, "", "backends:"]
    for b in report["backends"]:
        state = (f"available, {b.get('devices', 0)} device(s)" if b.get("available")
                 else f"unavailable: {b.get('reason')}")
        lines.append(f"  {b['name']:<10} {state}")
    lines.append(f"selected backend: {report['selected_backend'] or '-'}")
    lines.append(f"attention kernel (float32, causal): {report['attention_kernel'] or '-'}")
    for k in report.get("compiled_kernels", []):
        state = "ok" if k.get("available") else "unavailable"
        lines.append(f"{k['kind'].replace('_', ' ')} '{k['name']}' ({k['distribution']}): "
                     f"{state}: {k.get('detail', '')}")
    lines += ["", "plugins:"]
    for kind, names in report["plugins"].items():
        lines.append(f"  {kind:<17} {', '.join(names) if names else '-'}")
    if report["failed_plugins"]:
        lines += ["", "failed to load:"]
        lines += [f"  {f['plugin']} ({f['distribution']} {f['version']}): {f['error']}"
                  for f in report["failed_plugins"]]
    lines.append("")
    if report["missing"]:
        lines.append("missing (a run cannot work until this is fixed):")
        lines += [f"  - {m}" for m in report["missing"]]
    else:
        lines.append("ok: everything a run needs is here")
    return "\n".join(lines)
