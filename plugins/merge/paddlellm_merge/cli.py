"""``llm merge``: PaddleNLP-style flags or a mergekit YAML file (parsed by argparse, so that
``--model_path_list A B`` takes several values as in PaddleNLP; ``--help`` is rendered like
every other command's)."""
from __future__ import annotations

import typer
from paddlellm.api import HelpOption, PassThroughCommand, canonical_args


def merge_help_options() -> list[HelpOption]:
    """The argparse options of ``llm merge`` as help rows (one panel)."""
    from .spec import build_parser

    rows = []
    for action in build_parser()._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest == "help":
            continue
        flag = action.nargs == 0
        many = action.nargs in ("+", "*")
        metavar = {float: "FLOAT", int: "INTEGER"}.get(action.type, "TEXT")
        if getattr(action.type, "__name__", "") == "_bool":
            metavar = "BOOL"
        rows.append(HelpOption(longs[-1] if "_" in longs[-1] else longs[0], help=action.help or "",
                               default=None if flag else action.default, flag=flag,
                               metavar=metavar + (" ..." if many else ""),
                               required=action.required))
    return rows


def add_merge_command(app: typer.Typer) -> None:
    app.command(
        "merge",
        cls=PassThroughCommand.listing(merge_help_options, "[CONFIG.yaml] [OPTIONS]"),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(merge_command)


def merge_command(ctx: typer.Context) -> None:
    """Merge models (linear, slerp, ties, dare, della...) or LoRA adapters, tensor by tensor.

    Give a mergekit YAML file, or PaddleNLP-style flags (they override the file's values).

    Example: llm merge --model_path_list A B --weight_list 0.5 0.5 --output_path OUT
    """
    run_merge_cli(list(ctx.args))


def run_merge_cli(argv: list[str], log=print) -> None:
    from .spec import build_parser, spec_from_args

    parser = build_parser()
    known = [o for a in parser._actions for o in a.option_strings]
    ns = parser.parse_args(canonical_args(argv, known))
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
