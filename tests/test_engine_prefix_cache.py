"""Prefix caching: block hashing and reuse bookkeeping, and engine outputs identical with and
without it (shared system prompts, multi-turn histories, block-multiple prompts, eviction,
same-step admissions, seeded sampling, speculation, beam search, preemption), no leaks."""
from __future__ import annotations

import numpy as np
import pytest

from paddlellm.engine import LLMEngine, SamplingParams
from paddlellm.modeling.kv_manager import BlockManager, PagedKVCache, hash_block, prefix_hashes

BS = 4  # block size of every engine here
GREEDY = dict(temperature=0, ignore_eos=True)


# -- the block manager ------------------------------------------------------------------

def test_hashes_chain_and_include_the_salt():
    a = prefix_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    assert len(a) == 2  # full blocks only
    assert a[1] == hash_block(a[0], [5, 6, 7, 8]) != hash_block(None, [5, 6, 7, 8])
    assert prefix_hashes([9, 2, 3, 4, 5, 6, 7, 8], 4)[1] != a[1]  # the parent is in the hash
    assert prefix_hashes([1, 2, 3, 4], 4, "lora-a") != prefix_hashes([1, 2, 3, 4], 4)
    assert prefix_hashes([1, 2, 3, 4], 4, "") != prefix_hashes([1, 2, 3, 4], 4)
    assert prefix_hashes([1, 2, 3, 4], 4, "x") == prefix_hashes([1, 2, 3, 4], 4, "x")


def check_consistent(bm: BlockManager) -> None:
    """Every block is exactly one of: held (refs > 0), free, evictable (committed, refs 0)."""
    held = {b for t in bm.tables.values() for b in t}
    free, evictable = set(bm._free), set(bm._evictable)
    assert not (free & evictable) and not (held & (free | evictable))
    assert held | free | evictable == set(range(bm.num_blocks))
    for b in range(bm.num_blocks):
        assert bm.refs[b] == sum(t.count(b) for t in bm.tables.values())
        assert (b in evictable) == (bm.refs[b] == 0 and bm.block_hash[b] is not None)
    assert {h: b for b, h in enumerate(bm.block_hash) if h is not None} == bm._by_hash


def test_commit_lookup_share_release_and_lru_eviction():
    bm = BlockManager(6, 4)
    tokens = list(range(10))
    hashes = prefix_hashes(tokens, 4)  # 2 full blocks
    bm.allocate("a", 10)
    assert bm.lookup(hashes) == []  # nothing committed before the keys are written
    assert bm.commit("a", hashes) == 2 and bm.num_cached == 2
    first = bm.tables["a"][:2]
    assert bm.lookup(hashes) == first and bm.lookup(hashes[:1] + [b"x" * 32]) == first[:1]
    # b shares a's two committed blocks and gets a private third one
    assert bm.can_allocate("b", 11, first)
    bm.allocate("b", 11, first)
    assert bm.tables["b"][:2] == first and bm.tables["b"][2] != bm.tables["a"][2]
    assert bm.refs[first[0]] == 2 and bm.num_used == 4
    check_consistent(bm)
    # a duplicate of an existing hash stays private
    bm.allocate("c", 4)
    assert bm.commit("c", hashes[:1]) == 0 and bm.block_hash[bm.tables["c"][0]] is None
    for s in ("a", "b", "c"):
        bm.free(s)
    check_consistent(bm)
    assert bm.num_free == 6 and bm.num_used == 0 and bm.num_cached == 2  # evictable, reusable
    # evictable prefix blocks are part of the free count: reviving them uses it up
    assert bm.can_allocate("d", 24, first) and not bm.can_allocate("d", 25, first)
    # fresh allocations take never-committed blocks first, then the least recently released
    # committed block (a table's last block is released first: evicted before its parent)
    bm.allocate("e", 16)
    assert bm.num_cached == 2 and bm.num_evictions == 0
    bm.allocate("f", 4)
    assert bm.num_evictions == 1 and bm.lookup(hashes) == first[:1]
    check_consistent(bm)
    bm.free("e"), bm.free("f")
    assert bm.num_free == 6
    check_consistent(bm)


def test_cow_and_truncate_never_touch_committed_blocks():
    bm = BlockManager(8, 4)
    tokens = list(range(6))
    bm.allocate("p", 6)
    bm.commit("p", prefix_hashes(tokens, 4))
    bm.fork("p", "q")
    committed = bm.tables["p"][0]
    assert bm.prepare_write("q", 6, 7) == [(bm.tables["p"][1], bm.tables["q"][1])]
    assert bm.tables["q"][0] == committed  # the full committed block stays shared
    bm.allocate("q", 13)
    assert bm.truncate("q", 7) == 2
    bm.reassign(["p", "q"], [1, 1])
    for s in ("p", "q"):
        bm.free(s)
    check_consistent(bm)
    assert bm.num_free == 8 and bm.num_cached == 1


def test_allocate_with_a_prefix_is_checked():
    bm = BlockManager(4, 4)
    bm.allocate("a", 4)
    with pytest.raises(ValueError, match="holds no committed prefix"):
        bm.allocate("b", 8, [bm.tables["a"][0]])
    bm.commit("a", prefix_hashes([1, 2, 3, 4], 4))
    with pytest.raises(ValueError, match="already has blocks"):
        bm.allocate("a", 8, [bm.tables["a"][0]])
    with pytest.raises(MemoryError, match="blocks needed"):
        bm.allocate("b", 40, [bm.tables["a"][0]])
    with pytest.raises(ValueError, match="3 block hashes for a table of 1 blocks"):
        bm.commit("a", prefix_hashes(list(range(12)), 4))


# -- the engine -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base():
    return LLMEngine.from_pretrained(None, block_size=BS, num_blocks=64)  # the demo model


def make(base, **options):
    return LLMEngine(base.model, base.tokenizer, **{"block_size": BS, "num_blocks": 64, **options})


def rand(n, seed):
    return np.random.default_rng(seed).integers(0, 356, n).tolist()


class Result:
    """One request's token ids, finish reason, text and logprobs; equal to another when all
    but the logprob values are identical and those agree to 1e-5 (a prefill from a cached
    prefix multiplies matrices of another shape: the last bits may differ)."""

    def __init__(self) -> None:
        self.ids, self.reason, self.text, self.logprobs = [], None, "", []

    def __eq__(self, other) -> bool:
        if (self.ids, self.reason, self.text) != (other.ids, other.reason, other.text):
            return False
        if [t for t, _ in self.logprobs] != [t for t, _ in other.logprobs]:
            return False
        return np.allclose([v for _, v in self.logprobs], [v for _, v in other.logprobs],
                           rtol=0, atol=1e-5)

    def __repr__(self) -> str:
        return f"Result({self.ids}, {self.reason!r}, {self.text!r}, {self.logprobs})"


def run(engine, prompts, params, salts=None) -> list[Result]:
    """All prompts queued at once; one :class:`Result` per prompt."""
    params = params if isinstance(params, list) else [params] * len(prompts)
    for i, (p, sp) in enumerate(zip(prompts, params)):
        engine.add_request(f"r{i}", p, sp, cache_salt=salts[i] if salts else None)
    got = {f"r{i}": Result() for i in range(len(prompts))}
    while engine.has_unfinished_requests():
        for out in engine.step():
            g = got[out.request_id]
            g.ids += out.new_token_ids
            g.text += out.new_text
            g.logprobs += [(lp["token_id"], lp["logprob"]) for lp in out.logprobs or []]
            if out.finished:
                g.reason = out.finish_reason
    return [got[f"r{i}"] for i in range(len(prompts))]


def all_free(engine) -> None:
    """No leak: every block free (evictable committed blocks count as free), none held."""
    bm = engine.cache.blocks
    check_consistent(bm)
    assert not bm.tables and not bm._committed
    assert bm.num_free == bm.num_blocks and engine.stats()["kv_blocks_used"] == 0


def in_turns(engine, prompts, params):
    """Each prompt run alone after the previous finished (so later ones can hit)."""
    return [run(engine, [p], params)[0] for p in prompts]


def test_shared_system_prompt_hits_and_equals_uncached(base):
    system = rand(37, 0)
    prompts = [system + rand(n, 10 + n) for n in (3, 9, 1, 14)]
    params = SamplingParams(max_tokens=10, **GREEDY)
    plain = in_turns(make(base, enable_prefix_caching=False), prompts, params)
    engine = make(base)
    assert in_turns(engine, prompts, params) == plain
    stats = engine.stats()
    assert stats["prefix_caching"] == 1
    assert stats["prefix_cache_hits"] == 3 * 36  # 9 full blocks of the system prompt, 3 times
    assert stats["prefix_cache_queries"] == sum(map(len, prompts))
    assert stats["prefix_cache_hit_rate"] == pytest.approx(108 / sum(map(len, prompts)))
    all_free(engine)


def test_multi_turn_history_reuses_the_previous_answer(base):
    engine, plain = make(base), make(base, enable_prefix_caching=False)
    params = SamplingParams(max_tokens=9, **GREEDY)
    history = rand(11, 1)
    for turn in range(3):
        got, = run(engine, [history], params)
        ref, = run(plain, [history], params)
        assert got == ref, turn
        hits_before = engine.stats()["prefix_cache_hits"]
        history = history + got.ids + rand(5, 20 + turn)  # the answer and the next user message
    # the last turn reused every full block of the previous prompt + answer but its last token
    got, = run(engine, [history], params)
    ref, = run(plain, [history], params)
    assert got == ref
    previous = len(history) - 5  # prompt + answer of turn 3, minus the answer's last token
    assert engine.stats()["prefix_cache_hits"] - hits_before == (previous - 1) // BS * BS
    all_free(engine)


def test_prompt_of_exactly_whole_blocks_recomputes_its_last_block(base):
    prompt = rand(6 * BS, 2)
    params = SamplingParams(max_tokens=8, logprobs=2, **GREEDY)
    engine = make(base)
    first = run(engine, [prompt], params)
    again = run(engine, [prompt], params)  # all 6 blocks cached: the 6th is computed again
    assert first == again == run(make(base, enable_prefix_caching=False), [prompt], params)
    assert engine.stats()["prefix_cache_hits"] == 5 * BS
    all_free(engine)


def test_eviction_under_a_tiny_pool(base):
    """10 blocks: each 20-token prompt (+8 generated) holds 7; committed blocks of earlier
    prompts are evicted (LRU) to make room, and outputs never change."""
    prompts = [rand(20, 30 + i) for i in range(3)]
    prompts.append(prompts[0][:12] + rand(8, 40))  # shares 3 blocks with the first: evicted
    prompts.append(prompts[2])  # its first 3 blocks survive (a table's tail is evicted first)
    params = SamplingParams(max_tokens=8, **GREEDY)
    engine = make(base, num_blocks=10, max_model_len=40)
    got = in_turns(engine, prompts, params)
    assert got == in_turns(make(base, num_blocks=10, max_model_len=40,
                                enable_prefix_caching=False), prompts, params)
    bm = engine.cache.blocks
    assert bm.num_evictions > 0
    assert engine.stats()["prefix_cache_hits"] == 12  # the last prompt found its 3 blocks
    all_free(engine)


def test_requests_admitted_in_one_step_do_not_share_blocks_being_written(base):
    system = rand(18, 3)
    prompts = [system + rand(n, 50 + n) for n in (2, 5, 7)]
    params = SamplingParams(max_tokens=6, **GREEDY)
    engine = make(base)
    assert run(engine, prompts, params) == run(make(base, enable_prefix_caching=False),
                                              prompts, params)
    assert engine.stats()["prefix_cache_hits"] == 0  # all three prefilled in the same step
    assert engine.stats()["kv_blocks_cached"] > 0
    late = run(engine, [system + [7, 8]], params)
    assert engine.stats()["prefix_cache_hits"] == 16  # a later request does share them
    assert late == run(make(base, enable_prefix_caching=False), [system + [7, 8]], params)
    all_free(engine)


def test_seeded_sampling_is_unchanged(base):
    system = rand(25, 4)
    prompts = [system + rand(4, 60), system + rand(6, 61)]
    params = [SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, top_k=40, seed=s,
                             logprobs=1) for s in (7, 8)]
    engine = make(base)
    in_turns(engine, prompts[:1], params[0])  # warm the cache
    got = run(engine, prompts, params)
    assert got == run(make(base, enable_prefix_caching=False), prompts, params)
    assert engine.stats()["prefix_cache_hits"] >= 2 * 24
    all_free(engine)


def test_speculation_with_prefix_caching(base):
    """Drafts are never committed; rejected ones are freed; output equal to plain decoding."""
    text = "one two three four five six seven eight nine ten one two three four five six"
    prompt = base.tokenizer.encode(f"Repeat: {text}. Again: {text}")
    spec = dict(speculate_method="inference_with_reference", speculate_max_draft_token_num=3,
                speculate_max_ngram_size=2)
    params = SamplingParams(max_tokens=16, logprobs=1, stop=["nine"], **GREEDY)
    engine = make(base, **spec)
    first = run(engine, [prompt], params)
    second = run(engine, [prompt], params)
    plain = run(make(base, enable_prefix_caching=False), [prompt], params)
    assert first == second == plain
    assert engine.stats()["spec_draft_tokens"] > 0 and engine.stats()["prefix_cache_hits"] > 0
    all_free(engine)


def test_beam_search_reuses_prompt_blocks(base):
    system = rand(17, 5)
    prompts = [system + [3, 4, 5], system + [9]]
    engine = make(base)
    first = engine.beam_search(prompts[:1], num_beams=3, max_tokens=5)
    both = engine.beam_search(prompts, num_beams=3, max_tokens=5)
    ref = make(base, enable_prefix_caching=False).beam_search(prompts, num_beams=3, max_tokens=5)
    assert both == ref and first == ref[:1]
    assert engine.stats()["prefix_cache_hits"] == 2 * 16
    all_free(engine)


def test_preemption_and_abort_leave_no_leak(base):
    prompts = [rand(6, 70 + i) + rand(8, 9) for i in range(4)]
    params = SamplingParams(max_tokens=20, **GREEDY)
    engine = make(base, num_blocks=10, max_model_len=40)
    got = run(engine, prompts, params)
    assert engine.stats()["num_preemptions"] > 0
    assert got == run(make(base, num_blocks=10, max_model_len=40, enable_prefix_caching=False),
                      prompts, params)
    all_free(engine)
    engine.add_request("a", prompts[0] * 2, params)
    engine.add_request("b", prompts[0] * 2 + [1], params)
    engine.add_request("c", prompts[1], params)
    for _ in range(3):
        engine.step()
    for rid in ("a", "b", "c"):
        engine.abort_request(rid)
    while engine.has_unfinished_requests():
        engine.step()
    all_free(engine)


def test_cache_salt_keeps_requests_apart(base):
    prompt = rand(21, 6)
    params = SamplingParams(max_tokens=4, **GREEDY)
    engine = make(base)
    run(engine, [prompt], params, salts=["adapter-a"])
    run(engine, [prompt], params, salts=["adapter-b"])
    run(engine, [prompt], params)
    assert engine.stats()["prefix_cache_hits"] == 0
    run(engine, [prompt], params, salts=["adapter-a"])
    assert engine.stats()["prefix_cache_hits"] == 20
    all_free(engine)


def test_off_by_option_and_where_reuse_could_change_outputs(base):
    engine = make(base, enable_prefix_caching=False)
    run(engine, [rand(12, 7)] * 2, SamplingParams(max_tokens=2, **GREEDY))
    stats = engine.stats()
    assert stats["prefix_caching"] == 0 and stats["prefix_cache_queries"] == 0
    assert stats["kv_blocks_cached"] == 0 and engine.prefix_caching_off_reason is None

    class OwnPool(PagedKVCache):  # a pool that does not declare supports_prefix_caching
        pass

    model = base.model
    model.new_paged_cache = lambda *a: OwnPool(*a)
    try:
        engine = make(base)
    finally:
        del model.new_paged_cache
    assert not engine.prefix_caching and "supports_prefix_caching" in engine.prefix_caching_off_reason
    model.prefix_kv = lambda batch: None
    try:
        engine = make(base)
    finally:
        model.prefix_kv = None
    assert not engine.prefix_caching and "prefix tuning" in engine.prefix_caching_off_reason


def test_int8_kv_pool_caches_prefixes_exactly(base):
    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine.llm_engine import default_model_path
    from paddlellm_quant.kv_int8 import enable_int8_kv_cache

    model = enable_int8_kv_cache(AutoModelForCausalLM.from_pretrained(default_model_path()),
                                 "dynamic")
    system = rand(22, 8)
    prompts = [system + [1, 2], system + [5]]
    params = SamplingParams(max_tokens=6, **GREEDY)
    engine = LLMEngine(model, base.tokenizer, block_size=BS, num_blocks=64)
    assert engine.prefix_caching
    got = in_turns(engine, prompts, params)
    assert got == in_turns(LLMEngine(model, base.tokenizer, block_size=BS, num_blocks=64,
                                     enable_prefix_caching=False), prompts, params)
    assert engine.stats()["prefix_cache_hits"] == 20
    all_free(engine)
