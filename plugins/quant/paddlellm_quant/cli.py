"""``llm quantize``: quantize a checkpoint, save it, and report perplexity before and after.

    llm quantize --model_name_or_path M --quant_type gptq --calibration_data calib.jsonl \\
                 --output_dir out [--group_size 64] [--config quant.yaml]

Flags win over the config file (JSON or YAML, the same flat keys). The quantizer's own
options (``group_size``, ``bits``, ``percdamp``, ...) are the fields of its ``config_class``.
Without ``--model_name_or_path`` the bundled demo model is quantized, with calibration and
held-out text generated from the demo tasks.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import typer
from pydantic import BaseModel, ConfigDict, Field

#: the options of the command itself; the rest belong to the selected quantizer
class QuantizeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quant_type: str = Field(..., description="weight_only_int8, weight_only_int4, gptq, awq, ...")
    output_dir: str = Field(..., description="where the quantized checkpoint is written")
    model_name_or_path: str | None = Field(None, description="float checkpoint (default: the bundled demo model)")
    calibration_data: str | None = Field(None, description="jsonl with 'text' or 'src'(+'tgt'), or .txt lines")
    eval_data: str | None = Field(None, description="held-out text for perplexity (same formats)")
    dtype: str = Field("float32", description="dtype the model is loaded and saved in")
    nsamples: int = Field(128, gt=0, description="calibration blocks of seqlen tokens")
    seqlen: int = Field(128, gt=1, description="tokens per calibration block")
    batch_size: int = Field(8, gt=0, description="calibration / evaluation batch size")
    max_eval_samples: int = Field(256, gt=0, description="held-out texts used for perplexity")
    seed: int = Field(0, description="seed of the generated demo calibration/held-out text")
    skip_eval: bool = Field(False, description="do not compute perplexity")


def add_quantize_command(app: typer.Typer) -> None:
    from paddlellm.api import PassThroughCommand

    app.command(
        "quantize",
        cls=PassThroughCommand.listing(quantize_help_options, "[CONFIG.json|yaml] [OPTIONS]"),
        no_args_is_help=True,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(quantize_command)


def quantize_help_options() -> list:
    """``llm quantize --help``: the command's options, then each quantizer's (by plugin)."""
    from paddlellm.api import HelpOption, fields_help_options

    rows = fields_help_options(QuantizeArgs, None)
    rows.append(HelpOption("config", help="JSON/YAML file with the same keys (flags win)",
                           metavar="FILE"))
    try:
        from paddlellm.api import get_plugin_manager

        groups: dict[Any, list] = {}
        for entry in get_plugin_manager().registry.entries("quantizer"):
            cls = entry.options_class()
            if cls is not None:
                groups.setdefault(cls, []).append(entry)
        for cls, entries in groups.items():
            names = ", ".join(e.name for e in entries)
            rows += fields_help_options(cls, f"--quant_type {names} ({entries[0].distribution})")
    except Exception:  # a broken quantizer plugin does not break the help (`llm plugins` says why)
        pass
    return rows


def quantize_command(ctx: typer.Context) -> None:
    """Quantize a model (weight_only_int8/int4, gptq, awq, ...) and report perplexity.

    Flags win over the config file; a quantizer's options are valid with its --quant_type.

    Without --model_name_or_path the bundled demo model is quantized.

    Example: llm quantize --quant_type gptq --calibration_data calib.jsonl --output_dir out
    """
    args = list(ctx.args)
    from paddlellm.errors import ConfigError

    try:
        run_quantize_cli(args)
    except (ConfigError, ValueError, FileNotFoundError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)


def split_options(raw: dict[str, Any]) -> tuple[QuantizeArgs, dict[str, Any]]:
    """Command keys -> :class:`QuantizeArgs`; the rest are the quantizer's options."""
    from paddlellm.api import validate_model

    core = {k: v for k, v in raw.items() if k in QuantizeArgs.model_fields}
    rest = {k: v for k, v in raw.items() if k not in QuantizeArgs.model_fields}
    return validate_model(QuantizeArgs, core, "llm quantize options"), rest


def run_quantize_cli(argv: list[str], log: Callable[[str], None] = typer.echo) -> dict[str, Any]:
    from paddlellm.api import load_config_file, parse_overrides

    config_file = argv.pop(0) if argv and not argv[0].startswith("--") else None
    flags = parse_overrides(argv)
    config_file = flags.pop("config", config_file)
    raw = load_config_file(config_file) if config_file else {}
    raw.update(flags)
    from paddlellm.api import is_paddlenlp_config, translate_quantize

    if is_paddlenlp_config(raw):  # a run_quantization.py argument file (PaddleNLP's keys)
        raw, notes = translate_quantize(raw, config_file)
        for note in notes:
            log(f"note: {note}")
    args, options = split_options(raw)
    return quantize_checkpoint(args, options, log=log)


def _typed_options(quantizer: Any, options: dict[str, Any], quant_type: str) -> dict[str, Any]:
    """Flag strings -> the quantizer's option types (unknown keys list the valid ones)."""
    from .base import validate_options

    cls = getattr(quantizer, "config_class", None)
    if cls is None:
        if options:
            raise ValueError(f"quant_type '{quant_type}' takes no options, got {', '.join(options)}")
        return {}
    from paddlellm.api import normalise_value

    options = {k: normalise_value(v, cls.model_fields[k].annotation) if k in cls.model_fields else v
               for k, v in options.items()}
    return validate_options(cls, options, quant_type).model_dump()


def _tokenizer_or_none(auto_tokenizer: Any, path: str) -> Any:
    """The checkpoint's tokenizer, or None when the folder ships none."""
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in (
            "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")):
        return None
    return auto_tokenizer.from_pretrained(path)


def _say_warnings(caught: list, log: Callable[[str], None]) -> None:
    """Print calibration warnings (and re-emit any other warning unchanged)."""
    from .calibration import QuantizationWarning

    for w in caught:
        if issubclass(w.category, QuantizationWarning):
            log(f"warning: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def quantize_checkpoint(args: QuantizeArgs, options: dict[str, Any],
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load, (calibrate,) quantize, save, evaluate; returns the report (also in OUT/quantize_report.json)."""
    from paddlellm.api import DEMO_MODEL_DIR, AutoModelForCausalLM, quantizer_for
    from paddlellm.api import AutoTokenizer

    from .calibration import QuantizationWarning, batches, demo_texts, encode_texts, read_texts, token_blocks
    from .layers import weight_bytes
    from .ppl import perplexity

    quantizer = quantizer_for(args.quant_type)  # unknown types list the installed ones
    opts = _typed_options(quantizer, options, args.quant_type)
    demo = args.model_name_or_path is None
    path = args.model_name_or_path or str(DEMO_MODEL_DIR)
    needs = bool(getattr(quantizer, "needs_calibration", False))
    tokenizer = _tokenizer_or_none(AutoTokenizer, path)
    if tokenizer is None:
        if needs:
            raise ValueError(f"quant_type '{args.quant_type}' calibrates on text, but {path} has "
                             "no tokenizer (tokenizer.json / tokenizer.model): add one to the "
                             "checkpoint folder")
        if not args.skip_eval:
            log(f"note: {path} has no tokenizer: quantizing without the perplexity report")
        args = args.model_copy(update={"skip_eval": True})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=args.dtype)
    max_pos = getattr(model.config, "max_position_embeddings", None) or args.seqlen
    seqlen = min(args.seqlen, max_pos)

    calib_texts = (read_texts(args.calibration_data) if args.calibration_data
                   else demo_texts(args.nsamples * max(seqlen // 8, 1), "train", args.seed)
                   if demo and needs else None)
    if calib_texts is None and needs:
        raise ValueError(f"quant_type '{args.quant_type}' needs --calibration_data FILE")
    eval_texts = (read_texts(args.eval_data) if args.eval_data
                  else demo_texts(args.max_eval_samples, "eval", args.seed) if demo else None)
    calibration = None
    caught: list[warnings.WarningMessage] = []
    if calib_texts is not None:
        with warnings.catch_warnings(record=True) as caught_here:
            warnings.simplefilter("always", QuantizationWarning)
            blocks = token_blocks(encode_texts(tokenizer, calib_texts), seqlen, args.nsamples)
        _say_warnings(caught_here, log)
        caught += caught_here
        calibration = batches(blocks, args.batch_size)
        log(f"calibration: {blocks.shape[0]} blocks of {seqlen} tokens")
    eval_ids = (encode_texts(tokenizer, eval_texts[: args.max_eval_samples])
                if eval_texts and not args.skip_eval else None)

    report: dict[str, Any] = {"quant_type": args.quant_type, "model": path, "options": opts}
    if eval_ids and not args.skip_eval:
        report["ppl_before"] = perplexity(model, eval_ids, args.batch_size, max_pos)
        log(f"perplexity before ({args.dtype}): {report['ppl_before']:.4f}")
    report["bytes_before"] = weight_bytes(model)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught_here:
        warnings.simplefilter("always", QuantizationWarning)
        model = quantizer.quantize(model, args.quant_type, calibration, opts)
    report["quantize_seconds"] = round(time.perf_counter() - start, 3)
    _say_warnings(caught_here, log)
    caught += caught_here
    report["warnings"] = [str(w.message) for w in caught if issubclass(w.category, QuantizationWarning)]
    if hasattr(quantizer, "describe"):  # e.g. FP8 says its compute is simulated
        log(quantizer.describe(model))
    report["bytes_after"] = weight_bytes(model)
    if eval_ids and not args.skip_eval:
        report["ppl_after"] = perplexity(model, eval_ids, args.batch_size, max_pos)
        change = 100 * (report["ppl_after"] / report["ppl_before"] - 1)
        log(f"perplexity after ({args.quant_type}): {report['ppl_after']:.4f} ({change:+.2f}%)")
    before, after = report["bytes_before"], report["bytes_after"]
    log(f"resident weights: {before['total'] / 2**20:.2f} MiB -> {after['total'] / 2**20:.2f} MiB "
        f"(linear layers {before['linear_layers'] / 2**20:.2f} -> {after['linear_layers'] / 2**20:.2f} MiB)")
    out = Path(args.output_dir)
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    (out / "quantize_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"saved {args.quant_type} checkpoint to {out}")
    return report
