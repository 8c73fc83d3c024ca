"""Peak resident memory of ``llm merge`` on generated checkpoints of several hundred MB.

    .venv/bin/python benchmarks/merge_memory.py [--dir /tmp/merge_mem] [--layers 8]

Writes three Llama-shaped float32 checkpoints (base + two "fine-tunes", sharded at 200MB),
then runs ``llm merge`` under ``/usr/bin/time -v`` for several methods and prints the peak RSS
("Maximum resident set size") beside the checkpoint size and the largest tensor. Streaming
keeps the peak near a few tensors (the largest is the embedding / head), not whole models.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

VENV_BIN = os.path.dirname(sys.executable)


def write_model(path: str, seed: int | None, layers: int, hidden: int, inter: int, vocab: int):
    from paddlellm_merge.io import write_streaming

    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (hidden,)),
                   (p + "self_attn.q_proj.weight", (hidden, hidden)),
                   (p + "self_attn.k_proj.weight", (hidden, hidden)),
                   (p + "self_attn.v_proj.weight", (hidden, hidden)),
                   (p + "self_attn.o_proj.weight", (hidden, hidden)),
                   (p + "post_attention_layernorm.weight", (hidden,)),
                   (p + "mlp.gate_proj.weight", (inter, hidden)),
                   (p + "mlp.up_proj.weight", (inter, hidden)),
                   (p + "mlp.down_proj.weight", (hidden, inter))]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]

    def load(name):
        shape = dict(shapes)[name]
        idx = [n for n, _ in shapes].index(name)
        x = np.random.default_rng([0, idx]).standard_normal(shape, dtype=np.float32) * 0.02
        if seed is not None:
            x += np.random.default_rng([seed, idx]).standard_normal(shape, dtype=np.float32) * 0.002
        return x

    write_streaming(path, [(n, s, "float32") for n, s in shapes], load, max_shard_size="200MB")
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 16,
           "num_key_value_heads": 16, "vocab_size": vocab, "torch_dtype": "float32"}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return max(int(np.prod(s)) * 4 for _, s in shapes)


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", res.stderr).group(1)
    m, s = wall.split(":")[-2:]
    return rss / 1024, float(m) * 60 + float(s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/merge_mem")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    args = ap.parse_args()
    paths = {n: os.path.join(args.dir, n) for n in ("base", "a", "b")}
    largest = 0
    for seed, (name, path) in zip((None, 1, 2), paths.items()):
        if not os.path.exists(os.path.join(path, "config.json")):
            largest = write_model(path, seed, args.layers, args.hidden, args.inter, args.vocab)
    largest = largest or args.vocab * args.hidden * 4
    size = sum(os.path.getsize(os.path.join(paths["a"], f)) for f in os.listdir(paths["a"]))
    print(f"each checkpoint: {size / 1e6:.0f} MB float32; largest tensor {largest / 1e6:.0f} MB")
    llm = os.path.join(VENV_BIN, "llm")
    base_cmd = [llm, "merge", "--no-parity", "--model_path_list", paths["a"], paths["b"]]
    runs = [("linear", []), ("ties", ["--base_model_path", paths["base"]]),
            ("dare_ties", ["--base_model_path", paths["base"]]),
            ("della", ["--base_model_path", paths["base"]]), ("slerp", []),
            ("linear", ["--n_process", "2"])]
    print(f"{'method':<22}{'peak RSS MB':>12}{'wall s':>8}")
    for method, extra in runs:
        out = os.path.join(args.dir, "out")
        rss, wall = peak_rss_mb([*base_cmd, "--merge_method", method, *extra, "--output_path", out])
        label = method + (" --n_process 2" if "--n_process" in extra else "")
        print(f"{label:<22}{rss:>12.0f}{wall:>8.1f}")
    py = os.path.join(VENV_BIN, "python")
    rss, _ = peak_rss_mb([py, "-c", "import numpy, paddlellm_merge.engine, paddlellm.checkpoint"])
    print(f"{'(interpreter+imports)':<22}{rss:>12.0f}")


if __name__ == "__main__":
    main()
