"""Beam search on the engine (paged cache, prompt blocks shared copy-on-write) equals
``model.generate``'s beam search (itself checked against transformers in
plugins/models/tests/test_parity.py); ``llm predict --decode_strategy beam_search``."""
from __future__ import annotations

import json

import paddle
import pytest

from helpers import run_cli
from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.engine import LLMEngine, SamplingParams, default_model_path
from paddlellm.modeling.kv_manager import BlockManager, PagedKVCache
from paddlellm.engine.predict import encode_prompt, record_messages

TEXTS = ["Sort: 4 1 3", "What colour is the eel?", "Repeat: a b c a b", "Count: y y",
         "Reverse: q w e r t y"]


@pytest.fixture(scope="module")
def base():
    return LLMEngine.from_pretrained(None, block_size=4, num_blocks=8)  # the demo model


def make(base, **kwargs):
    return LLMEngine(base.model, base.tokenizer, **{"block_size": 4, "num_blocks": 300, **kwargs})


def reference(model, prompt, n, num_beams, **kwargs):
    out = model.generate(paddle.to_tensor([prompt]), max_new_tokens=n,
                         decode_strategy="beam_search", num_beams=num_beams, **kwargs)
    new = out.numpy()[0, len(prompt):].tolist()
    eos = model.generation_config["eos_token_id"]
    return new[:new.index(eos) + 1] if eos in new else new


@pytest.mark.parametrize("num_beams", [2, 4])
def test_engine_beam_search_equals_generate(base, num_beams):
    engine = make(base)
    prompts = [base.tokenizer.encode(t) for t in TEXTS]
    budgets = [14, 9, 14, 3, 20]
    copies = []
    write = engine.cache.blocks.prepare_write

    def spy(*args):  # copy-on-write happens: shared prompt blocks are copied on a write
        pairs = write(*args)
        copies.extend(pairs)
        return pairs

    engine.cache.blocks.prepare_write = spy
    res = engine.beam_search(prompts, num_beams, budgets)
    for p, n, r in zip(prompts, budgets, res):
        ref = reference(engine.model, p, n, num_beams)
        assert r["token_ids"] == ref
        stopped = ref[-1] == engine.model.generation_config["eos_token_id"]
        assert r["finish_reason"] == ("stop" if stopped else "length")
        assert r["text"] == base.tokenizer.decode(ref[:-1] if stopped else ref,
                                                  skip_special_tokens=True)
    assert copies  # 4-token blocks: prompts end inside a shared block
    stats = engine.stats()
    assert stats["kv_blocks_used"] == 0 and stats["requests_finished"] == len(prompts)


def test_penalty_ignore_eos_groups_and_context_limit(base):
    """Repetition penalty, eos ignored, groups limited by max_num_seqs, and budgets capped
    by max_model_len."""
    engine = make(base, max_num_seqs=4, max_model_len=24)
    prompts = [base.tokenizer.encode(t) for t in TEXTS[:3]]
    res = engine.beam_search(prompts, 3, 40, repetition_penalty=1.3, ignore_eos=True)
    for p, r in zip(prompts, res):
        ref = engine.model.generate(paddle.to_tensor([p]), max_new_tokens=24 - len(p),
                                    decode_strategy="beam_search", num_beams=3,
                                    repetition_penalty=1.3, eos_token_id=[])
        assert r["token_ids"] == ref.numpy()[0, len(p):].tolist()
        assert r["finish_reason"] == "length" and len(p) + len(r["token_ids"]) == 24
    assert engine.stats()["kv_blocks_used"] == 0


def test_beam_search_shares_the_pool_with_running_requests(base):
    engine = make(base, num_blocks=60)
    prompt = base.tokenizer.encode(TEXTS[0])
    engine.add_request("a", prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
    engine.step()
    used = engine.stats()["kv_blocks_used"]
    res = engine.beam_search([prompt], 2, 10)
    assert res[0]["token_ids"] == reference(engine.model, prompt, 10, 2)
    assert engine.stats()["kv_blocks_used"] == used  # the running request kept its blocks
    with pytest.raises(ValueError, match="needs .* KV blocks; .* are free"):
        engine.beam_search([list(range(60))], 4, 60)
    with pytest.raises(ValueError, match="num_beams >= 2"):
        engine.beam_search([prompt], 1, 4)
    while engine.has_unfinished_requests():
        engine.step()
    assert engine.stats()["kv_blocks_used"] == 0


def test_block_manager_copy_on_write():
    bm = BlockManager(10, 4)
    bm.allocate("p", 6)  # blocks 0, 1 (block 1 half full)
    bm.fork("p", "a")
    bm.fork("p", "b")
    bm.free("p")
    assert bm.refs[:2] == [2, 2] and bm.num_free == 8
    assert bm.prepare_write("a", 6, 7) == [(1, 2)]  # the shared partial block is copied
    assert bm.tables["a"] == [0, 2] and bm.refs[1] == 1
    assert bm.prepare_write("b", 6, 7) == []  # now b alone holds block 1
    bm.reassign(["a", "b"], [0, 0])  # both beams continue from a
    assert bm.tables["a"] == bm.tables["b"] == [0, 2] and bm.refs[1] == 0 and bm.num_free == 8
    bm.free("a")
    bm.free("b")
    assert bm.num_free == 10 and not any(bm.refs)
    cache = PagedKVCache(1, 3, 2, 1, 2)
    cache.key_pools[0][0:2] = paddle.ones([2, 1, 2])
    cache.copy_blocks([(0, 2)])
    assert cache.key_pools[0][4:6].numpy().tolist() == [[[1.0, 1.0]], [[1.0, 1.0]]]


def test_llm_predict_beam_search(tmp_path):
    records = [{"src": "Reverse: a b c"}, {"src": "Sort: 3 1 2 9 4"}]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in records))
    run_cli("predict", "--input_file", str(inp), "--output_file", str(out), "--batch_size", "4",
            "--max_length", "60", "--decode_strategy", "beam_search", "--num_beams", "2",
            "--block_size", "16", env={"OMP_NUM_THREADS": "1"}, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    for r, row in zip(records, rows):
        ids = encode_prompt(tokenizer, record_messages(r, "-"), True)
        assert row["output_token_ids"] == reference(model, ids, 60 - len(ids), 2)
    proc = run_cli("predict", "--input_file", str(inp), "--decode_strategy", "beam_search",
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "needs --num_beams >= 2" in proc.stderr


FIXTURES = default_model_path().parents[3] / "plugins" / "models" / "tests" / "fixtures"


@pytest.mark.parametrize("name", ["llama", "gemma2", "bloom", "gpt2"])
def test_engine_beam_search_equals_transformers_fixtures(name):
    """transformers' beam search outputs (scripts/fixtures/make_model_fixtures.py, 3 beams,
    8 new tokens, left-padded batch) from the engine, each row unpadded."""
    import numpy as np

    with np.load(FIXTURES / f"{name}.npz") as data:
        ref = {k: data[k] for k in data.files}
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name)
    engine = LLMEngine(model, None, block_size=4, num_blocks=200)
    rows = [ids[mask.astype(bool)].tolist() for ids, mask in zip(ref["batch_ids"], ref["batch_mask"])]
    plain = engine.beam_search(rows, 3, 8, ignore_eos=True)
    assert [r["token_ids"] for r in plain] == ref["beam_batch"].tolist()
    eos = int(ref["beam_eos"])
    with_eos = engine.beam_search(rows, 3, 8, ignore_eos=True, stop_token_ids=[eos])
    for r, want in zip(with_eos, ref["beam_eos_batch"].tolist()):
        want = want[:want.index(eos) + 1] if eos in want else want
        assert r["token_ids"] == want
    assert engine.stats()["kv_blocks_used"] == 0
