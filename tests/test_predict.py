"""``llm predict``: jsonl in, jsonl out; equals greedy model.generate; benchmark; LoRA; errors."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from helpers import run_cli
from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.engine import default_model_path
from paddlellm.engine.predict import PredictOptions, encode_prompt, predict, record_messages
from paddlellm.errors import DataFormatError

RECORDS = [{"src": "Reverse: a b c"}, {"src": "Sort: 3 1 2 9 4"},
           {"src": ["Repeat: x y", "Count: a a"], "tgt": ["x y"]}, {"src": "Repeat: q"}]


def generate_reference(model, tokenizer, records, max_length):
    outs = []
    for r in records:
        ids = encode_prompt(tokenizer, record_messages(r, "-"), True)
        out = model.generate(paddle.to_tensor([ids]), max_new_tokens=max_length - len(ids))
        new = out.numpy()[0, len(ids):].tolist()
        eos = model.generation_config["eos_token_id"]
        outs.append(new[:new.index(eos) + 1] if eos in new else new)
    return outs


def test_cli_output_equals_greedy_generate_and_benchmark_reports(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    proc = run_cli("predict", "--input_file", str(inp), "--output_file", str(out),
                   "--batch_size", "3", "--max_length", "90", "--decode_strategy", "greedy_search",
                   "--block_size", "16", env={"OMP_NUM_THREADS": "1"}, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ref = generate_reference(model, tokenizer, RECORDS, 90)
    assert [r["output_token_ids"] for r in rows] == ref
    assert [r["src"] for r in rows] == [r["src"] for r in RECORDS]
    assert rows[0]["output"] == tokenizer.decode(ref[0], skip_special_tokens=True)
    assert "wrote 4 predictions" in proc.stderr


def test_benchmark_forces_full_length_and_reports_percentiles(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:2]))
    logs = []
    res = predict(PredictOptions(input_file=str(inp), output_file=str(tmp_path / "o.jsonl"),
                                 batch_size=2, max_length=70, benchmark=True), log=logs.append)
    m = res["metrics"]
    prompt_lens = m["prompt_tokens"]
    assert m["output_tokens"] == 2 * 70 - prompt_lens  # eos ignored: decoded to max_length
    assert 0 < m["latency_p50_s"] <= m["latency_p90_s"] <= m["latency_p99_s"]
    assert "output tokens/s; latency p50" in logs[-1]


def test_lora_path_equals_the_adapted_model(tmp_path):
    from paddlellm.modeling import peft

    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path)
    model = peft.apply_peft(model, "lora", {"lora_rank": 4})
    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter an effect
            p.set_value(paddle.to_tensor(rng.normal(0, 0.3, p.shape).astype("float32")))
    peft.save_adapter(model, tmp_path / "adapter")
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:2]))
    opts = dict(input_file=str(inp), output_file=str(tmp_path / "o.jsonl"), batch_size=2,
                max_length=75, decode_strategy="greedy_search")
    with_lora = predict(PredictOptions(**opts, lora_path=str(tmp_path / "adapter")), log=print)
    plain = predict(PredictOptions(**opts), log=print)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    ref = generate_reference(model, tokenizer, RECORDS[:2], 75)
    assert [r["token_ids"] for r in with_lora["results"]] == ref
    assert [r["token_ids"] for r in plain["results"]] != ref


def test_bad_input_names_file_and_line(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"src": "ok"}\n{"text": "no src"}\n')
    with pytest.raises(DataFormatError, match=r"in.jsonl:2: expected an object with 'src'"):
        predict(PredictOptions(input_file=str(inp)))
    inp.write_text('{"src": "ok"}\n')
    proc = run_cli("predict", "--input_file", str(inp), "--decode_strategy", "beam",
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "unknown --decode_strategy 'beam'; valid: greedy_search, sampling, beam_search" in proc.stderr


def test_prefix_path_decodes_with_the_prefix(tmp_path):
    from paddlellm.modeling.peft import apply_peft, save_adapter

    path = default_model_path()
    paddle.seed(3)
    adapted = apply_peft(AutoModelForCausalLM.from_pretrained(path), "prefix",
                         {"num_prefix_tokens": 4})
    for p in adapted.parameters():  # a prefix strong enough to change the answers
        if not p.stop_gradient:
            p.set_value(paddle.randn(p.shape) * 3.0)
    save_adapter(adapted, tmp_path / "prefix")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    predict(PredictOptions(input_file=str(inp), output_file=str(out), batch_size=2,
                           max_length=120, decode_strategy="greedy_search",
                           prefix_path=str(tmp_path / "prefix")), log=lambda _: None)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(path, prefix_path=tmp_path / "prefix").eval()
    want = generate_reference(model, AutoTokenizer.from_pretrained(path), RECORDS, 120)
    assert [r["output_token_ids"] for r in rows] == want
    plain = generate_reference(AutoModelForCausalLM.from_pretrained(path).eval(),
                               AutoTokenizer.from_pretrained(path), RECORDS, 120)
    assert want != plain  # the prefix changes what the model says
    with pytest.raises(ValueError, match="--prefix_path cannot be combined"):
        predict(PredictOptions(input_file=str(inp), prefix_path=str(tmp_path / "prefix"),
                               lora_path=str(tmp_path)), log=lambda _: None)
