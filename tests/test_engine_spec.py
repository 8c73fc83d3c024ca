"""Speculative decoding in the engine: n-gram drafting, exact verification in one batched
forward over the paged cache, rejected slots freed, stops/usage/logprobs unchanged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paddlellm.engine import LLMEngine, SamplingParams
from paddlellm.modeling.kv_manager import BlockManager
from paddlellm.engine.speculative import (DRAFTERS, NgramDrafter, accept_or_resample,
                                          register_drafter)

SPEC = dict(speculate_method="inference_with_reference", speculate_max_draft_token_num=4,
            speculate_max_ngram_size=3)
COPY_TEXTS = ["Repeat: the quick brown fox jumps over the lazy dog. the quick brown fox",
              "a b c d e f g a b c d e f g a b c", "Sort: 4 1 3", "What colour is the eel?",
              "Count: y y y 3 What comes after g? h Count: y y"]


@pytest.fixture(scope="module")
def base():
    return LLMEngine.from_pretrained(None, block_size=4, num_blocks=8)  # the demo model


def make(base, **kwargs):
    return LLMEngine(base.model, base.tokenizer, **{"block_size": 4, "num_blocks": 256, **kwargs})


def run(engine, prompts, params):
    """Drain with all requests queued at once; per request the outputs' fields."""
    for i, (p, sp) in enumerate(zip(prompts, params)):
        engine.add_request(f"r{i}", p, sp)
    res = {f"r{i}": {"ids": [], "text": "", "lp": [], "reason": None, "usage": None}
           for i in range(len(prompts))}
    while engine.has_unfinished_requests():
        for out in engine.step():
            r = res[out.request_id]
            r["ids"] += out.new_token_ids
            r["text"] += out.new_text
            r["lp"] += out.logprobs or []
            assert out.num_output_tokens == len(r["ids"])
            if out.finished:
                r["reason"] = out.finish_reason
                r["usage"] = (out.num_prompt_tokens, out.num_output_tokens)
    return [res[f"r{i}"] for i in range(len(prompts))]


def test_ngram_drafter_matches_longest_recent_ngram():
    d = NgramDrafter(max_ngram_size=3)
    assert d.propose([1, 2, 3, 9, 9, 1, 2, 3], 2) == [9, 9]
    assert d.propose([5, 2, 3, 7, 1, 2, 3], 3) == [7, 1, 2]  # 3-gram absent: the 2-gram "2 3"
    assert d.propose([4, 6, 4, 8, 4], 5) == [8, 4]  # most recent match of "4"
    assert d.propose([1, 2, 3], 4) == [] and d.propose([7], 4) == []
    assert NgramDrafter(1).propose([1, 2, 1], 1) == [2]


def test_greedy_batched_speculation_is_token_identical(base):
    prompts = [base.tokenizer.encode(t) for t in COPY_TEXTS]
    lens = [40, 33, 12, 25, 1]
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=i % 2 == 0)
              for i, n in enumerate(lens)]
    plain = run(make(base), prompts, params)
    engine = make(base, **SPEC)
    spec = run(engine, prompts, params)
    assert spec == plain
    stats = engine.stats()
    assert stats["spec_accepted_tokens"] > 0
    assert stats["tokens_per_seq_step"] > 1.0  # drafts were accepted: fewer steps per token
    assert stats["steps"] < make_steps(base, prompts, params)
    assert stats["kv_blocks_used"] == 0 and stats["kv_blocks_free"] == stats["kv_blocks_total"]
    assert stats["generation_tokens"] == sum(len(r["ids"]) for r in spec)


def make_steps(base, prompts, params):
    engine = make(base)
    run(engine, prompts, params)
    return engine.stats()["steps"]


def test_stops_penalty_and_logprobs_equal_plain_decoding(base):
    """Stop strings, stop token ids, eos, repetition penalty and logprobs (the host path)."""
    tok = base.tokenizer
    prompts = [tok.encode(t) for t in COPY_TEXTS[:3]]
    full = run(make(base), prompts[:1], [SamplingParams(max_tokens=30, temperature=0,
                                                        ignore_eos=True)])[0]
    params = [SamplingParams(max_tokens=30, temperature=0, stop=[full["text"][10:14]], ignore_eos=True),
              SamplingParams(max_tokens=30, temperature=0, stop_token_ids=[full["ids"][7]]),
              SamplingParams(max_tokens=20, temperature=0, repetition_penalty=1.3, logprobs=2)]
    plain = run(make(base), prompts, params)
    spec = run(make(base, **SPEC), prompts, params)
    assert [r["ids"] for r in spec] == [r["ids"] for r in plain]
    assert [r["text"] for r in spec] == [r["text"] for r in plain]
    assert [r["reason"] for r in spec] == [r["reason"] for r in plain]
    assert [r["usage"] for r in spec] == [r["usage"] for r in plain]
    for a, b in zip(spec[2]["lp"], plain[2]["lp"]):
        assert a["token_id"] == b["token_id"]
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
        assert [t for t, _ in a["top"]] == [t for t, _ in b["top"]]
    assert len(spec[2]["lp"]) == len(spec[2]["ids"])


def test_tight_pool_preemption_and_context_limit(base):
    """Drafts shrink when blocks are short; preemption and max_model_len stay correct."""
    prompts = [base.tokenizer.encode(t) for t in COPY_TEXTS[:4]]
    params = [SamplingParams(max_tokens=60, temperature=0, ignore_eos=True)] * 4
    kw = dict(num_blocks=30, max_model_len=48)
    plain = run(make(base, **kw), prompts, params)
    engine = make(base, **kw, **SPEC)
    spec = run(engine, prompts, params)
    assert spec == plain
    assert all(r["reason"] == "length" and sum(r["usage"]) == 48 for r in spec)
    stats = engine.stats()
    assert stats["num_preemptions"] > 0 and stats["kv_blocks_used"] == 0


def test_rejected_slots_are_freed_after_each_step(base):
    """A drafter that is always wrong: after every step the sequence holds exactly the blocks
    its cached tokens need (the rejected drafts' blocks went back to the pool)."""
    class Wrong:
        def propose(self, seq_tokens, k):
            return [(seq_tokens[-1] + 1) % 300] * k

    engine = make(base, drafter=Wrong(), speculate_max_draft_token_num=7)
    prompt = base.tokenizer.encode(COPY_TEXTS[2])
    engine.add_request("a", prompt, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    ids = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            ids += out.new_token_ids
        if engine.has_unfinished_requests():
            seq = engine._requests["a"]
            assert seq.num_cached == seq.length - 1
            assert len(engine.cache.blocks.tables["a"]) == -(-seq.num_cached // 4)
    ref = run(make(base), [prompt], [SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)])
    assert ids == ref[0]["ids"]
    assert engine.stats()["kv_blocks_used"] == 0


def test_block_manager_truncate():
    bm = BlockManager(6, 4)
    bm.allocate("a", 11)  # 3 blocks
    assert bm.truncate("a", 5) == 1 and len(bm.tables["a"]) == 2 and bm.num_free == 4
    assert bm.truncate("a", 8) == 0 and bm.truncate("missing", 0) == 0
    bm.free("a")
    assert bm.num_free == 6


def test_rejection_sampling_preserves_the_distribution():
    """Keep x with p(x), else draw from p without x: the emitted token is distributed as p."""
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05, 0.0])
    rng = np.random.default_rng(0)
    for draft in (0, 3, 5):
        counts = np.zeros(p.size)
        for _ in range(20000):
            counts[accept_or_resample(p, draft, rng)[0]] += 1
        np.testing.assert_allclose(counts / counts.sum(), p, atol=0.015)
        assert counts[5] == 0


def test_sampled_speculation_top_k1_equals_greedy_and_sampling_runs(base):
    """With top_k=1 the target is one-hot: rejection sampling must reproduce greedy exactly;
    a seeded sampled run is reproducible and leaks no blocks."""
    prompts = [base.tokenizer.encode(t) for t in COPY_TEXTS[:3]]
    greedy = run(make(base), prompts, [SamplingParams(max_tokens=25, temperature=0,
                                                      ignore_eos=True)] * 3)
    k1 = [SamplingParams(max_tokens=25, temperature=0.8, top_k=1, seed=i, ignore_eos=True)
          for i in range(3)]
    engine = make(base, **SPEC)
    assert [r["ids"] for r in run(engine, prompts, k1)] == [r["ids"] for r in greedy]
    assert engine.stats()["spec_accepted_tokens"] > 0
    sampled = [SamplingParams(max_tokens=25, temperature=1.0, top_p=0.9, seed=i) for i in range(3)]
    a = run(make(base, **SPEC), prompts, sampled)
    b = run(make(base, **SPEC), prompts, sampled)
    assert a == b and all(r["reason"] in ("stop", "length") for r in a)
    assert all(len(r["ids"]) <= 25 for r in a)


def test_sampled_first_tokens_follow_the_target(base):
    """Empirical check: 400 seeded requests whose drafts are the prompt's own continuation;
    the first generated token's frequencies match the model's softmax."""
    prompt = base.tokenizer.encode(COPY_TEXTS[1])
    engine = make(base)
    engine.add_request("x", prompt, SamplingParams(max_tokens=1, temperature=0, logprobs=5))
    top = engine.step()[0].logprobs[0]["top"]  # the five likeliest first tokens

    class Guess:  # always drafts the likeliest token, then the second likeliest
        def propose(self, seq_tokens, k):
            return [top[0][0], top[1][0]][:k]

    n = 400
    engine = make(base, drafter=Guess(), speculate_max_draft_token_num=2, max_num_seqs=n,
                  num_blocks=2000)
    res = run(engine, [prompt] * n, [SamplingParams(max_tokens=2, temperature=1.0, seed=s)
                                     for s in range(n)])
    first = np.array([r["ids"][0] for r in res])
    for tok, lp in top[:3]:
        assert abs((first == tok).mean() - np.exp(lp)) < 4 * np.sqrt(np.exp(lp) / n) + 0.01, tok
    assert engine.stats()["kv_blocks_used"] == 0


def test_unknown_method_and_bad_options_are_clear(base):
    with pytest.raises(ValueError, match="unknown speculate_method 'ngram2'.*inference_with_reference"):
        make(base, speculate_method="ngram2")
    with pytest.raises(ValueError, match="speculate_max_draft_token_num must be >= 1"):
        make(base, speculate_method="inference_with_reference", speculate_max_draft_token_num=0)
    assert make(base, speculate_method="None").drafter is None


def test_a_registered_drafter_is_a_plugin_point(base):
    class Echo:
        def propose(self, seq_tokens, k):
            return seq_tokens[-k:]

    register_drafter("test-echo", lambda cfg, model: Echo())
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_drafter("test-echo", lambda cfg, model: Echo())
        engine = make(base, speculate_method="test-echo", speculate_max_draft_token_num=3)
        assert isinstance(engine.drafter, Echo)
        prompt = base.tokenizer.encode(COPY_TEXTS[0])
        sp = [SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)]
        assert run(engine, [prompt], sp)[0]["ids"] == run(make(base), [prompt], sp)[0]["ids"]
    finally:
        DRAFTERS.pop("test-echo")


FIXTURES = Path(__file__).resolve().parents[1] / "plugins" / "models" / "tests" / "fixtures"


@pytest.mark.parametrize("name", ["llama", "mistral", "gemma2", "bloom", "gpt2", "qwen2_moe"])
def test_every_family_speculates_exactly(name):
    """Random tiny checkpoints of other families (sliding window, softcap, ALiBi, learned
    positions, MoE): prompts with a repeated half so drafts exist; greedy output equal."""
    from paddlellm import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name)
    rng = np.random.default_rng(1)
    vocab = model.config.vocab_size
    prompts = [np.tile(rng.integers(0, vocab, n), 2).tolist() for n in (5, 9, 3)]
    params = [SamplingParams(max_tokens=m, temperature=0, ignore_eos=True) for m in (12, 7, 16)]
    plain = run(LLMEngine(model, None, block_size=4, num_blocks=64), prompts, params)
    engine = LLMEngine(model, None, block_size=4, num_blocks=64, **SPEC)
    assert run(engine, prompts, params) == plain
    assert engine.stats()["spec_draft_tokens"] > 0 and engine.stats()["kv_blocks_used"] == 0


def test_llm_predict_speculative_equals_plain(tmp_path):
    from helpers import run_cli

    inp = tmp_path / "in.jsonl"
    inp.write_text('{"src": "Repeat: a b c a b c"}\n{"src": "Sort: 3 1 2"}\n')
    common = ["predict", "--input_file", str(inp), "--batch_size", "2", "--max_length", "90",
              "--decode_strategy", "greedy_search", "--block_size", "16", "--benchmark"]
    env = {"OMP_NUM_THREADS": "1"}
    run_cli(*common, "--output_file", str(tmp_path / "a.jsonl"), env=env, check=True)
    proc = run_cli(*common, "--output_file", str(tmp_path / "b.jsonl"), "--speculate_method",
                   "inference_with_reference", "--speculate_max_draft_token_num", "3",
                   "--speculate_max_ngram_size", "2", "--speculate_verify_window", "3",
                   env=env, check=True)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert "tokens per sequence per step" in proc.stderr
    assert "verified exactly here" in proc.stderr  # the TopP+window options are a note
    bad = run_cli("predict", "--input_file", str(inp), "--speculate_method", "eagle", env=env)
    assert bad.returncode == 2 and "unknown --speculate_method 'eagle'" in bad.stderr
