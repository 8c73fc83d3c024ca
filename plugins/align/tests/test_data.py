"""Preference data: PaddleNLP's records, errors naming file:line, packing that changes nothing."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.errors import DataFormatError
from paddlellm.modeling.prepare import DEMO_MODEL_DIR
from paddlellm_align.data import (pair_batch, pointwise_batch, read_preference_jsonl,
                                  tokenize_records)
from paddlellm_align.demo import demo_preferences
from paddlellm_align.logps import sequence_logps


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_records_multi_turn_and_sort(tmp_path):
    path = write(tmp_path / "p.jsonl", [
        {"src": ["hi", "what is 2+2?"], "tgt": ["hello"], "response": ["5", "4", "four"],
         "sort": [0, 2, 1]},
        {"src": "q", "tgt": [], "response": ["bad", "good"], "sort": [1, 3]},
    ])
    a, b = read_preference_jsonl(path)
    assert [m["role"] for m in a.messages] == ["user", "assistant", "user"]
    assert a.messages[1]["content"] == "hello" and a.messages[2]["content"] == "what is 2+2?"
    assert (a.chosen, a.rejected) == ("4", "5")  # highest sort chosen, lowest rejected
    assert (b.chosen, b.rejected) == ("good", "bad")
    kto = read_preference_jsonl(write(tmp_path / "k.jsonl", [
        {"src": ["q"], "tgt": [], "response": ["x"], "sort": [0]},
        {"src": ["q"], "tgt": [], "response": "y", "sort": [1]}]), pointwise=True)
    assert [r.desirable for r in kto] == [False, True]


@pytest.mark.parametrize("line, pointwise, message", [
    ('{"src": ["q"], "tgt": [], "response": ["a", "b"]}', False, r"missing 'sort'"),
    ('{"src": ["q"], "tgt": ["x"], "response": ["a", "b"], "sort": [1, 0]}', False,
     "'tgt' must have one turn fewer than 'src'"),
    ('{"src": ["q"], "tgt": [], "response": ["a", "b"], "sort": [1]}', False,
     "'sort' must be a list of numbers, one per response"),
    ('{"src": ["q"], "tgt": [], "response": ["a"], "sort": [1]}', False,
     "needs at least two responses"),
    ('{"src": ["q"], "tgt": [], "response": ["a", "b"], "sort": [1, 1]}', False,
     "nothing is preferred"),
    ('{"src": ["q"], "tgt": [], "response": ["a", "b"], "sort": [1, 0]}', True,
     "a KTO record has one 'response'"),
    ('{"src": ["q"], "tgt": [], "response": ["a"], "sort": [2]}', True, r"sort \[2\]"),
    ('{"src": ["q"], "tgt": [], "response": [3, 4], "sort": [1, 0]}', False,
     "'response' must be a string or a list of strings"),
    ('{"src": ["q"], "tgt": [', False, "not valid JSON"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, pointwise, message):
    good = {"src": ["q"], "tgt": [], "response": ["a"] if pointwise else ["a", "b"],
            "sort": [1] if pointwise else [1, 0]}
    path = write(tmp_path / "bad.jsonl", [good, good, line])
    with pytest.raises(DataFormatError, match=rf"bad.jsonl:3: .*{message}"):
        read_preference_jsonl(path, pointwise=pointwise)


def test_demo_preferences_are_right_versus_wrong():
    rows = demo_preferences(60, split="eval", seed=3)
    for r in rows:
        chosen = r["response"][int(np.argmax(r["sort"]))]
        rejected = r["response"][int(np.argmin(r["sort"]))]
        assert chosen == r["answer"] and rejected != r["answer"] and rejected.strip()
    assert {r["task"] for r in rows} == {"copy", "reverse", "sort", "count", "next", "fact"}
    kto = demo_preferences(10, pointwise=True)
    assert [r["sort"] for r in kto[:2]] == [[1], [0]] and kto[1]["response"][0] != kto[1]["answer"]


@pytest.fixture(scope="module")
def demo():
    paddle.seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(DEMO_MODEL_DIR))
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(DEMO_MODEL_DIR))


def unpacked_logps(model, prompt, response):
    ids = paddle.to_tensor([prompt + response])
    with paddle.no_grad():
        logits = model(ids)[0].astype("float64").numpy()  # (T, V)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    start = max(len(prompt), 1)
    return sum(logp[t - 1, (prompt + response)[t]] for t in range(start, len(prompt) + len(response)))


def test_packed_pairs_equal_separate_forwards(demo):
    model, tok = demo
    from paddlellm_align.data import parse_record

    records = [parse_record(r, "demo", False) for r in demo_preferences(7, seed=1)]
    examples = tokenize_records(tok, records, max_length=128)
    # the response turn carries the template's end-of-turn tokens; the prompt ends where the
    # assistant starts
    assert tok.decode(examples[0].chosen, skip_special_tokens=True).strip() == records[0].chosen
    batch = pair_batch(examples, capacity=256, pad_id=tok.pad_token_id, layout="packed")
    assert batch["input_ids"].shape[0] < 7  # several pairs share a row
    assert (batch["segment_ids"] == -1).mean() < 0.3  # padding only at row ends
    with paddle.no_grad():
        logps, _ = sequence_logps(model, batch)
    want = []
    for e in examples:
        want += [unpacked_logps(model, e.prompt, e.chosen), unpacked_logps(model, e.prompt, e.rejected)]
    np.testing.assert_allclose(logps.numpy(), want, rtol=2e-5, atol=2e-4)
    assert list(batch["lengths"]) == [len(x) for e in examples for x in (e.chosen, e.rejected)]


def test_kto_batch_packs_mismatched_pairs(demo):
    model, tok = demo
    from paddlellm_align.data import parse_record

    records = [parse_record(r, "demo", True) for r in demo_preferences(4, seed=2, pointwise=True)]
    examples = tokenize_records(tok, records, max_length=64)
    batch = pointwise_batch(examples, capacity=128, pad_id=tok.pad_token_id)
    assert batch["labels"].tolist() == [True, False, True, False]
    with paddle.no_grad():
        kl, _ = sequence_logps(model, batch["kl"])
    want = [unpacked_logps(model, examples[i].prompt, examples[i - 1].chosen) for i in range(4)]
    np.testing.assert_allclose(kl.numpy(), want, rtol=2e-5, atol=2e-4)


def test_long_sequences_are_truncated_to_max_length(demo):
    _, tok = demo
    from paddlellm_align.data import PreferenceRecord

    rec = PreferenceRecord([{"role": "user", "content": "Repeat: " + "a b " * 40}],
                           "a " * 30, "b " * 5)
    (e,) = tokenize_records(tok, [rec], max_length=40)
    assert len(e.prompt) + len(e.chosen) <= 40 and len(e.prompt) + len(e.rejected) <= 40
    assert len(e.prompt) >= 20  # the prompt keeps its end


def test_shared_prompt_layout_equals_packed_with_gradients(demo):
    """The prompt encoded once (its KV reused by both responses) gives the same log-probs and
    the same gradients as the packed layout, with fewer token positions."""
    model, tok = demo
    from paddlellm_align.data import parse_record, shared_positions

    records = [parse_record(r, "demo", False) for r in demo_preferences(6, seed=4)]
    examples = tokenize_records(tok, records, max_length=128)
    results = {}
    for layout in ("packed", "shared_prompt"):
        batch = pair_batch(examples, capacity=256, pad_id=tok.pad_token_id, layout=layout)
        logps, _ = sequence_logps(model, batch)
        (logps * paddle.to_tensor(np.arange(1, 13, dtype="float32"))).sum().backward()
        grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        model.clear_gradients()
        results[layout] = (logps.numpy(), grads, batch)
    (lp_a, g_a, packed), (lp_b, g_b, shared) = results["packed"], results["shared_prompt"]
    np.testing.assert_allclose(lp_b, lp_a, rtol=1e-5, atol=1e-4)
    for name in g_a:
        scale = np.abs(g_a[name]).max() + 1e-6
        np.testing.assert_allclose(g_b[name] / scale, g_a[name] / scale, atol=2e-4, err_msg=name)
    assert shared_positions(shared) < packed["input_ids"].size
    auto = pair_batch(examples, capacity=256, pad_id=tok.pad_token_id, layout="auto")
    assert "prompt_ids" in auto  # long shared prompts, short answers: auto shares the prompt
