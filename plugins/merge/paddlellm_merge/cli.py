"""``llm merge``: PaddleNLP-style flags or a mergekit YAML file (argparse, so that
``--model_path_list A B`` takes several values as in PaddleNLP)."""
from __future__ import annotations

import typer


def add_merge_command(app: typer.Typer) -> None:
    app.command(
        "merge",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Merge models or LoRA adapters (linear, slerp, ties, dare, della...). "
             "`llm merge --help` for the flags.",
    )(merge_command)


def merge_command(ctx: typer.Context) -> None:
    """Merge models or LoRA adapters; `llm merge --help` lists the flags."""
    run_merge_cli(list(ctx.args))


def run_merge_cli(argv: list[str], log=print) -> None:
    from .spec import build_parser, spec_from_args

    ns = build_parser().parse_args(argv)
    if ns.lora_model_path and not ns.base_model_path and not ns.config:
        from .adapters import merge_adapters
        from .io import canonical_dtype

        if (ns.merge_method or "linear") != "linear":
            from .errors import MergeError

            raise MergeError(f"merging adapters without --base_model_path is linear (exact "
                             f"concatenation); '{ns.merge_method}' needs --base_model_path")
        merge_adapters(ns.lora_model_path, ns.output_path, weights=ns.weight_list,
                       normalize=True if ns.normalize is None else ns.normalize,
                       dtype=canonical_dtype(ns.dtype) if ns.dtype else None, log=log)
        return
    from .engine import merge

    spec = spec_from_args(ns)
    report = merge(spec, ns.output_path, n_process=ns.n_process, max_shard_size=ns.max_shard_size,
                   copy_file_list=ns.copy_file_list, prefix=ns.merge_prefix, log=log)
    if ns.parity:
        from .parity import parity_summary

        inputs = list(report.inputs)
        base = spec.base_model or ns.base_model_path
        if base and base not in inputs:
            inputs.append(base)  # e.g. an adapter merged into its base
        parity_summary(ns.output_path, inputs, prompts=ns.parity_prompts, log=log)
