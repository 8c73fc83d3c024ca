"""``llm export``: a base model plus an adapter -> one normal Hugging Face checkpoint.

    llm export --model_name_or_path BASE --lora_path ADAPTER --merge-adapter --output_dir OUT

The adapter is merged into the base weights (``paddlellm.modeling.peft.merge_adapter``) and the result
is written by ``save_model`` (config, safetensors, tokenizer): ``transformers`` and
``AutoModelForCausalLM.from_pretrained(OUT)`` load it with no adapter code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(
    model_name_or_path: str = typer.Option(..., "--model_name_or_path",
                                           help="the base checkpoint directory"),
    output_dir: str = typer.Option(..., "--output_dir", help="where the checkpoint is written"),
    lora_path: Optional[str] = typer.Option(None, "--lora_path",
                                            help="a LoRA adapter directory (peft format)"),
    prefix_path: Optional[str] = typer.Option(None, "--prefix_path",
                                              help="an adapter directory of another method"),
    merge_adapter: bool = typer.Option(False, "--merge-adapter", "--merge_adapter",
                                       help="merge the adapter into the base weights"),
    dtype: Optional[str] = typer.Option(None, "--dtype",
                                        help="weights dtype of the output (default: the base's)"),
) -> None:
    """Merge an adapter into its base model and save a normal checkpoint."""
    from ..errors import ConfigError

    adapter = lora_path or prefix_path
    if lora_path and prefix_path:
        raise ConfigError("give one of --lora_path and --prefix_path")
    if adapter and not merge_adapter:
        raise ConfigError("--lora_path/--prefix_path need --merge-adapter (the adapter "
                          "directory itself is already the peft-format export)")
    if merge_adapter and not adapter:
        raise ConfigError("--merge-adapter needs --lora_path (or --prefix_path)")
    summary = export_model(model_name_or_path, output_dir, adapter, dtype=dtype)
    typer.echo(f"wrote {summary['output_dir']} ({summary['parameters']:,} parameters"
               + (f", merged {summary['adapter']}" if adapter else "") + ")")


def export_model(base: str, output_dir: str, adapter: str | None = None,
                 dtype: str | None = None) -> dict:
    """Load ``base`` (+ ``adapter``, merged) and save it to ``output_dir``; a summary dict."""
    from ..modeling.auto import AutoModelForCausalLM
    from ..modeling.peft import load_adapter, merge_adapter
    from ..tokenizer import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter:
        model = merge_adapter(load_adapter(model, adapter))
    tok_dir = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    out = Path(output_dir)
    model.save_pretrained(str(out), dtype=dtype)
    try:
        AutoTokenizer.from_pretrained(tok_dir).save_pretrained(str(out))
    except (OSError, ValueError) as exc:  # a base without a tokenizer still exports weights
        typer.echo(f"warning: no tokenizer written ({exc})", err=True)
    params = sum(int(p.size) for p in model.parameters())
    return {"output_dir": str(out), "parameters": params, "adapter": adapter}
