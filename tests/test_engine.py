"""LLMEngine: continuous batching equals model.generate, preemption, abort, sampling, stops."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm.engine import LLMEngine, SamplingParams

GREEDY = dict(temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def engine_factory():
    base = LLMEngine.from_pretrained(None, block_size=4, num_blocks=64)  # the demo model

    def make(**kwargs):
        return LLMEngine(base.model, base.tokenizer, **{"block_size": 4, **kwargs})

    return make


def prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 356, n).tolist() for n in lengths]


def reference(model, prompt, n, **kwargs):
    out = model.generate(paddle.to_tensor([prompt]), max_new_tokens=n, **kwargs)
    return out.numpy()[0, len(prompt):].tolist()


def drain(engine, arrivals=None):
    """Step until done; ``arrivals[step] = [(id, prompt, params)]`` join at that step."""
    arrivals = arrivals or {}
    tokens, reasons, texts, step = {}, {}, {}, 0
    while engine.has_unfinished_requests() or any(s >= step for s in arrivals):
        for rid, prompt, params in arrivals.pop(step, []):
            engine.add_request(rid, prompt, params)
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            texts[out.request_id] = texts.get(out.request_id, "") + out.new_text
            if out.finished:
                reasons[out.request_id] = out.finish_reason
        step += 1
    return tokens, reasons, texts


def test_staggered_mixed_batch_equals_generate(engine_factory):
    engine = engine_factory(num_blocks=64)
    ps = prompts([5, 23, 9, 14, 2])
    lens = [12, 5, 20, 8, 15]
    arrivals = {0: [("r0", ps[0], SamplingParams(max_tokens=lens[0], **GREEDY)),
                    ("r1", ps[1], SamplingParams(max_tokens=lens[1], **GREEDY))],
                2: [("r2", ps[2], SamplingParams(max_tokens=lens[2], **GREEDY))],
                3: [("r3", ps[3], SamplingParams(max_tokens=lens[3], **GREEDY))],
                7: [("r4", ps[4], SamplingParams(max_tokens=lens[4], **GREEDY))]}
    tokens, reasons, _ = drain(engine, arrivals)
    for i, (p, n) in enumerate(zip(ps, lens)):
        assert tokens[f"r{i}"] == reference(engine.model, p, n, eos_token_id=[]), i
        assert reasons[f"r{i}"] == "length"
    assert engine.stats()["kv_blocks_used"] == 0


def test_preemption_under_tiny_budget_gives_identical_outputs(engine_factory):
    # 10 blocks of 4 tokens: one 30-token sequence fits, four do not -> preemption
    engine = engine_factory(num_blocks=10, max_model_len=40)
    ps = prompts([6, 11, 8, 4], seed=1)
    for i, p in enumerate(ps):
        engine.add_request(f"r{i}", p, SamplingParams(max_tokens=20, **GREEDY))
    tokens, _, _ = drain(engine)
    stats = engine.stats()
    assert stats["num_preemptions"] > 0
    for i, p in enumerate(ps):
        assert tokens[f"r{i}"] == reference(engine.model, p, 20, eos_token_id=[]), i
    assert stats["kv_blocks_used"] == 0 and stats["kv_blocks_free"] == 10
    assert stats["num_running"] == stats["num_waiting"] == 0


def test_max_num_seqs_queues_the_rest(engine_factory):
    engine = engine_factory(num_blocks=64, max_num_seqs=2)
    ps = prompts([4, 9, 6, 3], seed=7)
    for i, p in enumerate(ps):
        engine.add_request(f"r{i}", p, SamplingParams(max_tokens=6, **GREEDY))
    first = {o.request_id: o.new_token_ids for o in engine.step()}
    assert sorted(first) == ["r0", "r1"]
    assert engine.stats()["num_running"] == 2 and engine.stats()["num_waiting"] == 2
    tokens, _, _ = drain(engine)
    for i, p in enumerate(ps):
        assert first.get(f"r{i}", []) + tokens[f"r{i}"] == reference(engine.model, p, 6, eos_token_id=[]), i


def test_abort_frees_blocks_at_once(engine_factory):
    engine = engine_factory(num_blocks=32)
    a, b = prompts([10, 7], seed=2)
    engine.add_request("a", a, SamplingParams(max_tokens=50, **GREEDY))
    engine.add_request("b", b, SamplingParams(max_tokens=3, **GREEDY))
    engine.step()
    used = engine.stats()["kv_blocks_used"]
    assert used == 3 + 2  # 11 and 8 tokens in blocks of 4
    assert engine.abort_request("a") is True
    assert engine.stats()["kv_blocks_used"] == 2  # freed before any further step
    outs = engine.step()
    aborted = [o for o in outs if o.request_id == "a"]
    assert len(aborted) == 1 and aborted[0].finished and aborted[0].finish_reason == "abort"
    assert engine.abort_request("a") is False
    drain(engine)
    assert engine.stats()["kv_blocks_used"] == 0 and not engine.has_unfinished_requests()


def test_seeded_sampling_is_reproducible_and_matches_generate(engine_factory):
    engine = engine_factory()
    (p,) = prompts([8], seed=3)
    params = SamplingParams(max_tokens=12, temperature=0.8, top_k=20, top_p=0.9, seed=7,
                            ignore_eos=True, repetition_penalty=1.3)
    first = engine.generate([p, p], [params, SamplingParams(**{**params.__dict__, "seed": 8})])
    again = engine.generate([p], params)
    assert first[0]["token_ids"] == again[0]["token_ids"]
    assert first[0]["token_ids"] != first[1]["token_ids"]
    ref = reference(engine.model, p, 12, decode_strategy="sampling", temperature=0.8, top_k=20,
                    top_p=0.9, seed=7, repetition_penalty=1.3, eos_token_id=[])
    assert first[0]["token_ids"] == ref


def test_stop_strings_stop_tokens_eos_and_text(engine_factory):
    engine = engine_factory()
    tok = engine.tokenizer
    (p,) = prompts([6], seed=4)
    full = engine.generate([p], SamplingParams(max_tokens=12, **GREEDY))[0]
    text = tok.decode(full["token_ids"], skip_special_tokens=True)
    assert full["text"] == text and full["finish_reason"] == "length"
    stop = text[3:6]
    cut = engine.generate([p], SamplingParams(max_tokens=12, stop=[stop], **GREEDY))[0]
    assert cut["text"] == text[:text.find(stop)] and cut["finish_reason"] == "stop"
    # a stop token id ends the request with that token as the last id, not in the text
    stop_id = full["token_ids"][4]
    out = engine.generate([p], SamplingParams(max_tokens=12, stop_token_ids=[stop_id], **GREEDY))[0]
    first = full["token_ids"].index(stop_id)
    assert out["token_ids"] == full["token_ids"][:first + 1] and out["finish_reason"] == "stop"
    assert out["text"] == tok.decode(full["token_ids"][:first], skip_special_tokens=True)
    # eos (358 in the demo model) stops unless ignore_eos, as generate does
    eos_out = engine.generate([p], SamplingParams(max_tokens=12, temperature=0))[0]
    ref = reference(engine.model, p, 12)
    assert 358 in ref  # this prompt does reach eos
    assert eos_out["token_ids"] == ref[:ref.index(358) + 1] and eos_out["finish_reason"] == "stop"


def test_streamed_text_never_contains_a_partial_stop_string(engine_factory):
    engine = engine_factory()
    (p,) = prompts([6], seed=4)
    full = engine.generate([p], SamplingParams(max_tokens=12, **GREEDY))[0]["text"]
    stop = full[4:7] + "\x00"  # a prefix of it appears, the whole never does
    deltas = []
    res = engine.generate([p], SamplingParams(max_tokens=12, stop=[stop], **GREEDY),
                          on_output=lambda o: deltas.append(o.new_text))[0]
    assert res["text"] == full and "".join(deltas) == full
    emitted = ""
    for delta in deltas[:-1]:  # until the final flush no prefix of the stop string shows
        emitted += delta
        # a prefix of the stop string may end what was emitted only once the text after it is
        # known not to continue the stop string
        assert not any(emitted.endswith(stop[:k]) and full[len(emitted):len(emitted) + 1] == stop[k]
                       for k in range(1, len(stop)))
    assert emitted != full  # something was held back until the end


def test_logprobs(engine_factory):
    engine = engine_factory()
    (p,) = prompts([5], seed=5)
    res = engine.generate([p], SamplingParams(max_tokens=3, logprobs=4, **GREEDY))[0]
    logits = engine.model(paddle.to_tensor([p]))[0, -1].numpy().astype(np.float64)
    ref = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
    first = res["logprobs"][0]
    assert first["token_id"] == res["token_ids"][0] == int(np.argmax(ref))
    assert abs(first["logprob"] - ref.max()) < 1e-5
    assert [t for t, _ in first["top"]] == np.argsort(-ref)[:4].tolist()
    assert len(res["logprobs"]) == 3


def test_request_validation(engine_factory):
    engine = engine_factory(num_blocks=8, max_model_len=40)
    with pytest.raises(ValueError, match="leaves no room to generate within the context length of 40"):
        engine.add_request("x", [1] * 40, SamplingParams())
    with pytest.raises(ValueError, match="36 tokens needs 9 KV blocks but the pool has 8"):
        engine.add_request("x", [1] * 30, SamplingParams(max_tokens=6))
    with pytest.raises(ValueError, match=r"prompt token ids must be in \[0, 359\)"):
        engine.add_request("x", [1, 400], SamplingParams())
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams(top_p=0)
    engine.add_request("x", [1, 2], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request("x", [1, 2], SamplingParams())
    drain(engine)
    # generation stops at max_model_len with finish_reason "length"
    engine = engine_factory(max_model_len=40)
    engine.add_request("y", [1] * 36, SamplingParams(max_tokens=30, **GREEDY))
    tokens, reasons, _ = drain(engine)
    assert len(tokens["y"]) == 4 and reasons["y"] == "length"


def test_stats_keys(engine_factory):
    stats = engine_factory().stats()
    for key in ("num_running", "num_waiting", "kv_blocks_total", "kv_blocks_used",
                "num_preemptions", "prompt_tokens", "generation_tokens"):
        assert key in stats


def test_quant_type_goes_through_the_quantizer_plugin():
    from paddlellm.engine.loading import quantize_for_inference

    engine = LLMEngine.from_pretrained(None, quant_type="weight_only_int8")
    assert type(engine.model.model.layers[0].mlp.up_proj).__name__ != "Linear"
    (p,) = prompts([7], seed=6)
    got = engine.generate([p], SamplingParams(max_tokens=10, **GREEDY))[0]["token_ids"]
    assert got == reference(engine.model, p, 10, eos_token_id=[])
    with pytest.raises(ValueError, match="unknown quant_type 'int3'; installed quantizers handle: .*weight_only_int8"):
        quantize_for_inference(engine.model, "int3")


def test_engine_options_come_from_one_config(engine_factory):
    """Keywords build the engine's frozen EngineConfig; a named attention kernel is checked
    against the paged call before it becomes the process's kernel."""
    from paddlellm.modeling import attention
    from paddlellm.engine import EngineConfig
    from paddlellm.errors import UnknownPluginError

    engine = engine_factory(max_num_seqs=3, kv_cache_bytes=1 << 20)
    assert engine.config == EngineConfig(block_size=4, max_num_seqs=3, kv_cache_bytes=1 << 20)
    assert engine.max_num_seqs == 3 and engine.block_size == 4
    with pytest.raises(ValueError, match="block_size: Input should be greater than or equal to 1"):
        engine_factory(block_size=0)
    with pytest.raises(UnknownPluginError, match="unknown attention_kernel 'nope'"):
        engine_factory(attention_kernel="nope")
    try:
        engine = engine_factory(attention_kernel="reference")
        out = engine.generate([[5, 6, 7]], SamplingParams(max_tokens=4, **GREEDY))
        assert out[0]["token_ids"] == reference(engine.model, [5, 6, 7], 4)
    finally:
        attention.set_default_kernel("auto")
