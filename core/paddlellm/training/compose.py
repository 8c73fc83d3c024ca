"""``llm run``: compose backend + strategy + attention kernel + model + stage, then run.

Composition is plugin lookups by name (``--device``, ``--strategy``, ``--attention_kernel``,
``--model``, ``--stage``); the stage does the work and returns a summary, written to
``output_dir/run_summary.json`` (its before/after table is printed) beside ``run_config.json``:
the values the run actually used (a stage records the defaults it applied through
:meth:`RunContext.use_config`).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..plugin.config import AUTO, RunConfig, check_run_paths, dump_config
from ..plugin.device import parse_device
from ..errors import ConfigError, UnknownPluginError
from ..interfaces import AttentionSpec, Backend, TrainerStrategy, kernel_runs_on
from ..plugin.manager import PluginManager


@dataclass
class RunContext:
    """What a stage receives: the validated config and the composed parts."""

    config: RunConfig
    manager: PluginManager
    backend: Backend
    device: str
    strategy: TrainerStrategy
    #: the configuration the stage ran with (its demo defaults applied), when it differs
    used_config: RunConfig | None = None

    def use_config(self, config: RunConfig) -> None:
        """Record the values the stage actually uses (written to ``run_config.json``)."""
        self.used_config = config

    @property
    def registry(self):
        return self.manager.registry

    def options(self, kind: str) -> Any:
        """The validated options a selected plugin of ``kind`` contributed (or None)."""
        return self.config.plugin_options.get(kind)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)


def check_precision(config: RunConfig, backend: Backend, backend_name: str) -> None:
    if config.bf16 and config.fp16:
        raise ConfigError("choose one of --bf16 and --fp16")
    for flag, dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
        if getattr(config, flag) and not backend.supports_dtype(dtype, training=True):
            raise ConfigError(f"--{flag}: the '{backend_name}' backend cannot train in {dtype} "
                              "here; drop the flag (float32) or use a backend that can")


def check_attention_kernel(config: RunConfig, manager: PluginManager, backend_name: str) -> None:
    """An explicitly named kernel must run on this backend and in training."""
    from ..modeling import attention

    if config.attention_kernel == AUTO:
        attention.set_default_kernel(AUTO)
        return
    kernel = manager.registry.load("attention_kernel", config.attention_kernel)
    spec = AttentionSpec(training=True)
    if not kernel_runs_on(kernel, backend_name):
        raise UnknownPluginError(f"attention kernel '{config.attention_kernel}' does not run on "
                                 f"backend '{backend_name}' (it runs on {', '.join(kernel.backends)})")
    if not kernel.supports(spec):
        raise UnknownPluginError(f"attention kernel '{config.attention_kernel}' cannot train "
                                 f"({spec}); use --attention_kernel auto")
    attention.set_default_kernel(config.attention_kernel)


def compose(config: RunConfig, manager: PluginManager) -> RunContext:
    """Select and set up the backend, strategy and attention kernel named by ``config``."""
    _, device_index = parse_device(config.device)
    backend_entry = manager.select_backend(config.device)
    backend = backend_entry.load()
    device = backend.setup(device_index)
    check_precision(config, backend, backend_entry.name)
    check_attention_kernel(config, manager, backend_entry.name)
    strategy_factory = manager.registry.load("trainer_strategy", config.strategy)
    strategy = strategy_factory(config.plugin_options.get("trainer_strategy"))
    strategy.setup(backend)
    return RunContext(config=config, manager=manager, backend=backend, device=device,
                      strategy=strategy)


def run(config: RunConfig, manager: PluginManager) -> dict:
    """Compose, run the stage, and record the resolved config and the summary."""
    check_run_paths(config)  # missing checkpoint, --output_dir that is a file: clear errors
    ctx = compose(config, manager)
    stage = manager.registry.load("stage", config.stage)
    out = ctx.output_dir
    if ctx.strategy.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_config.json").write_text(json.dumps(dump_config(config), indent=2))
    summary = stage(ctx)
    if ctx.strategy.is_main_process:
        from .metrics import print_heading, summary_table

        if ctx.used_config is not None:
            (out / "run_config.json").write_text(json.dumps(dump_config(ctx.used_config),
                                                            indent=2))
        (out / "run_summary.json").write_text(json.dumps(summary, indent=2))
        table = summary_table(summary)
        print_heading("Result", stream=sys.stdout)
        if table:
            print(table)
        print(f"\nfull summary: {out / 'run_summary.json'}; configuration used: "
              f"{out / 'run_config.json'}", flush=True)
    return summary
