"""Measure every quant type on the bundled demo model: perplexity on held-out demo text and
resident weight memory; prints the Markdown table of docs/quantization.md.

    OMP_NUM_THREADS=1 python plugins/quant/tools/quant_table.py [QUANT_TYPE[:k=v,...] ...]

Default: every registered quantizer with its defaults, plus int4 variants at group size 64.
Each type runs twice: on the demo model as trained, and on the same model with LLM-like
activation outliers (an exact reparametrisation, see plugins/quant/tests/quant_testutil.py).
Uses ``llm quantize``'s own code path (``quantize_checkpoint``), calibration 128 x 128 tokens
of demo training text, 256 held-out demo texts.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "tests"))

DEFAULT = ["weight_only_int8", "weight_only_int4", "weight_only_int4:group_size=64",
           "gptq", "gptq:group_size=64", "gptq:group_size=64,act_order=true",
           "awq", "awq:group_size=32"]


def parse(spec: str) -> tuple[str, dict]:
    quant_type, _, rest = spec.partition(":")
    opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return quant_type, opts


def measure(spec: str, outliers: bool) -> dict:
    import paddlellm
    from paddlellm_quant import cli

    quant_type, opts = parse(spec)
    original = paddlellm.AutoModelForCausalLM.from_pretrained
    if outliers:  # the same trained weights, reparametrised on load
        from quant_testutil import with_outlier_channels

        def patched(path, *a, **k):
            return with_outlier_channels(original(path, *a, **k))
        paddlellm.AutoModelForCausalLM.from_pretrained = patched
    try:
        with tempfile.TemporaryDirectory() as out:
            args, options = cli.split_options({"quant_type": quant_type, "output_dir": out, **opts})
            report = cli.quantize_checkpoint(args, options, log=lambda s: None)
    finally:
        paddlellm.AutoModelForCausalLM.from_pretrained = original
    return report


def main(specs: list[str]) -> None:
    if not specs:
        from paddlellm.plugin.manager import get_plugin_manager

        registered = get_plugin_manager().registry.names("quantizer")
        specs = [s for s in DEFAULT if parse(s)[0] in registered]
        specs += [n for n in registered if n not in {parse(s)[0] for s in DEFAULT}]
    rows = []
    for spec in specs:
        plain, outl = measure(spec, False), measure(spec, True)
        b0, b1 = plain["bytes_before"], plain["bytes_after"]
        rows.append(f"| `{spec}` | {plain['ppl_after']:.4f} ({100 * (plain['ppl_after'] / plain['ppl_before'] - 1):+.2f}%) "
                    f"| {outl['ppl_after']:.4f} ({100 * (outl['ppl_after'] / outl['ppl_before'] - 1):+.2f}%) "
                    f"| {b1['total'] / 2**20:.2f} MiB ({b1['total'] / b0['total']:.2f}x) "
                    f"| {b1['linear_layers'] / 2**20:.2f} MiB ({b1['linear_layers'] / b0['linear_layers']:.3f}x) "
                    f"| {plain['quantize_seconds']:.1f} s |")
        print(rows[-1], flush=True)
    print(f"\nfloat32: perplexity {plain['ppl_before']:.4f} (with outliers {outl['ppl_before']:.4f}), "
          f"weights {b0['total'] / 2**20:.2f} MiB, linear layers {b0['linear_layers'] / 2**20:.2f} MiB\n")
    print("| quant type[:options] | ppl, demo model | ppl, with outlier channels | resident weights | linear layers | quantize time |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
