#!/usr/bin/env python3
"""Speculative decoding (``inference_with_reference``) vs plain decoding on the engine, on the
bundled demo model (a 3-layer toy that cannot really copy a text; its output re-uses the
task templates of its training corpus). Two tasks, decoded greedily to a fixed length:

* ``templates``: plain-text prompts "Repeat: <24 random letters>"; the model continues with
  corpus lines ("Reverse: ...", "Count: ...", "What colour is the ...") whose words the
  n-gram lookup finds in the text so far -- partial overlap;
* ``repeat-chat``: the same prompts in the chat template; the model answers with long runs
  of one repeated letter -- near-total overlap, an upper bound for prompt lookup.

Reports tokens per sequence per step (1.0 without
speculation), the draft acceptance rate, wall time and the speed-up, interleaving rounds
so both modes see the same machine load; outputs are checked to be identical.

    .venv/bin/python benchmarks/spec_bench.py [--rounds 3 --batch 1 --max_tokens 96]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=1, help="requests decoded together")
    p.add_argument("--max_tokens", type=int, default=96)
    p.add_argument("--draft", type=int, default=4, help="--speculate_max_draft_token_num")
    p.add_argument("--ngram", type=int, default=3, help="--speculate_max_ngram_size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--task", choices=("templates", "repeat-chat"), default="templates")
    args = p.parse_args()

    from paddlellm.engine import LLMEngine, SamplingParams

    base = LLMEngine.from_pretrained(None, device=args.device, num_blocks=8)
    tok = base.tokenizer
    rng = np.random.default_rng(0)
    words = "abcdefghijklmnopqrstuvwxyz"
    prompts = []
    for _ in range(args.batch):
        text = " ".join(rng.choice(list(words), 24))
        msg = f"Repeat: {text}"
        prompts.append(tok.encode(msg) if args.task == "templates" else list(
            tok.apply_chat_template([{"role": "user", "content": msg}], tokenize=True,
                                    add_generation_prompt=True)))
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
    spec_kw = dict(speculate_method="inference_with_reference",
                   speculate_max_draft_token_num=args.draft, speculate_max_ngram_size=args.ngram)
    times = {"plain": [], "spec": []}
    outs, stats = {}, {}
    for _ in range(args.rounds):
        for mode, kw in (("plain", {}), ("spec", spec_kw)):
            engine = LLMEngine(base.model, tok, max_num_seqs=args.batch, **kw)
            t0 = time.perf_counter()
            res = engine.generate(prompts, params)
            times[mode].append(time.perf_counter() - t0)
            outs[mode] = [r["token_ids"] for r in res]
            stats[mode] = engine.stats()
    assert outs["plain"] == outs["spec"], "speculative output differs from plain decoding"
    n = sum(map(len, outs["plain"]))
    plain, spec = statistics.median(times["plain"]), statistics.median(times["spec"])
    s = stats["spec"]
    print(f"task {args.task}, batch {args.batch}, {n} output tokens, drafts <= {args.draft}, n-gram <= {args.ngram}")
    print(f"plain: {stats['plain']['steps']} steps, {plain:.3f} s, {n / plain:.1f} tokens/s")
    print(f"spec:  {s['steps']} steps, {spec:.3f} s, {n / spec:.1f} tokens/s; "
          f"{s['tokens_per_seq_step']:.2f} tokens per sequence per step; "
          f"{s['spec_accepted_tokens']}/{s['spec_draft_tokens']} drafts accepted "
          f"({s['spec_acceptance_rate']:.0%})")
    print(f"speed-up {plain / spec:.2f}x (median of {args.rounds} rounds; outputs identical)")


if __name__ == "__main__":
    main()
