"""Forward+backward time of one DPO batch in the two pair layouts (packed vs shared prompt).

    OMP_NUM_THREADS=1 .venv/bin/python plugins/align/benchmarks/pair_layout.py [--pairs 16]

Uses the bundled demo model and demo preferences (chat template: ~55-token prompts,
5-10-token answers). Prints the median of 5 rounds per layout, the token positions each
runs, and the largest log-prob difference between the layouts.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import paddle

from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.modeling.prepare import DEMO_MODEL_DIR
from paddlellm_align.data import pair_batch, parse_record, shared_positions, tokenize_records
from paddlellm_align.demo import demo_preferences
from paddlellm_align.logps import sequence_logps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(str(DEMO_MODEL_DIR))
    model = AutoModelForCausalLM.from_pretrained(str(DEMO_MODEL_DIR))
    records = [parse_record(r, "demo", False) for r in demo_preferences(args.pairs, seed=1)]
    examples = tokenize_records(tok, records, 128)
    logps = {}
    for layout in ("packed", "shared_prompt"):
        batch = pair_batch(examples, 256, tok.pad_token_id, layout)
        positions = (batch["input_ids"].size if layout == "packed" else shared_positions(batch))
        times = []
        for _ in range(args.rounds + 1):  # the first round warms up
            start = time.perf_counter()
            lp, _ = sequence_logps(model, batch)
            lp.sum().backward()
            model.clear_gradients()
            times.append(time.perf_counter() - start)
        logps[layout] = lp.numpy()
        print(f"{layout:14s} {statistics.median(times[1:]) * 1000:8.1f} ms fwd+bwd, "
              f"{positions} token positions")
    print(f"max |logp difference| {np.abs(logps['packed'] - logps['shared_prompt']).max():.2e}")


if __name__ == "__main__":
    paddle.set_grad_enabled(True)
    main()
