"""Helpers shared by the align plugin's stage tests: run ``llm run`` in-process and read the
run's ``metrics.jsonl``."""
from __future__ import annotations

import json

from paddlellm.plugin.config import build_run_config
from paddlellm.plugin.manager import get_plugin_manager
from paddlellm.training.compose import run


def llm_run(*args: str) -> dict:
    """``llm run ARGS`` in this process; its summary."""
    manager = get_plugin_manager()
    return run(build_run_config(None, list(args), registry=manager.registry), manager)


def records(out) -> list[dict]:
    """Every record of ``out/metrics.jsonl``."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def by_step(out, key) -> dict[int, float]:
    """``key`` of each record that has it, by step."""
    return {r["step"]: r[key] for r in records(out) if key in r}
