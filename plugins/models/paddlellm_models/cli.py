"""``llm models`` and ``llm convert``: Paddle is imported only inside ``convert``."""
from __future__ import annotations

import json
from typing import Optional

import typer


def add_commands(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("convert")(convert)


def model_rows() -> list[dict]:
    """One row per preset (and family): name, family, sizes, parameter count."""
    from .registry_data import family_objects

    rows = []
    for name, family in family_objects().items():
        for preset in family.presets:
            c = family.config_for(preset)
            rows.append({
                "name": preset, "family": name, "default": preset == family.default_preset,
                "aliases": [a for a in family.aliases
                            if family.alias_presets.get(a, family.default_preset) == preset],
                "params": family.num_parameters(c), "hidden_size": c.hidden_size,
                "num_layers": c.num_layers, "num_heads": c.num_heads,
                "num_kv_heads": c.num_kv_heads, "vocab_size": c.vocab_size,
                "num_experts": c.num_experts, "model_types": list(family.model_types),
            })
    return rows


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def models(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    family: Optional[str] = typer.Option(None, "--family", help="Only presets of this family."),
) -> None:
    """List model families and their presets (usable as --model NAME). Does not import Paddle."""
    rows = [r for r in model_rows() if family is None or r["family"] == family]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("preset", "family", "params", "hidden", "layers", "heads/kv", "vocab",
                  "experts", "also")
    for r in rows:
        also = ", ".join([r["family"]] * r["default"] + r["aliases"])
        table.add_row(r["name"], r["family"], _human(r["params"]), str(r["hidden_size"]),
                      str(r["num_layers"]), f"{r['num_heads']}/{r['num_kv_heads']}",
                      str(r["vocab_size"]), str(r["num_experts"] or "-"), also)
    Console(width=max(Console().width, 120)).print(table)


def convert(
    src: str = typer.Argument(..., help="Checkpoint directory (safetensors or PyTorch .bin), "
                              "a .gguf file, or a Hugging Face Hub id."),
    dst: str = typer.Argument(..., help="Output directory (Hugging Face safetensors), or a .gguf "
                              "file to write GGUF for llama.cpp."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, bfloat16 or float16."),
    max_shard_size: str = typer.Option("5GB", "--max_shard_size", "--max-shard-size"),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Fail when max |diff| / max |logit| exceeds this "
        "(default by dtype: float32 1e-4, float16 2e-2, bfloat16 6e-2)."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min_agreement", "--min-agreement",
        help="Fail when top-1 agreement is below this (default 1.0 for float32, else 0.9)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare logits after converting."),
    outtype: str = typer.Option("f16", "--outtype", help="GGUF output type: f32, f16, bf16, q8_0, "
                                "q4_0 or q4_1 (only when DST ends in .gguf)."),
) -> None:
    """Convert a checkpoint to clean HF safetensors (also from or to GGUF), then check the
    converted model's logits."""
    from paddlellm.api import resolve_model_path

    from .convert import convert_and_check, convert_gguf

    if src.endswith(".gguf") or dst.endswith(".gguf"):
        if not src.endswith(".gguf"):
            src = resolve_model_path(src)
        report = convert_gguf(src, dst, dtype=dtype, outtype=outtype, max_shard_size=max_shard_size,
                              check=check)
        typer.echo(report["summary"])
        if not check or "top1_agreement" not in report:
            typer.echo(f"wrote {dst}" + ("" if check else " (parity check skipped)"))
            return
    else:
        src = resolve_model_path(src)  # a local folder, or a Hub id downloaded to its cache
        report = convert_and_check(src, dst, dtype=dtype, max_shard_size=max_shard_size,
                                   check=check)
    if not check:
        typer.echo(f"wrote {dst} (parity check skipped)")
        return
    threshold = report["threshold"] if threshold is None else threshold
    min_agreement = report["min_agreement"] if min_agreement is None else min_agreement
    typer.echo(f"converted {report['src_dtype']} -> {report['dtype']}")
    typer.echo(f"top-1 agreement: {report['top1_agreement']:.4f}  "
               f"max |logit diff|: {report['max_abs_diff']:.3e}  "
               f"max relative diff: {report['max_rel_diff']:.3e}")
    if report["max_rel_diff"] > threshold or report["top1_agreement"] < min_agreement:
        typer.secho(f"parity check FAILED (threshold {threshold:g}, min agreement "
                    f"{min_agreement:g})", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"parity check passed; wrote {dst}")
