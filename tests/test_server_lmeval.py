"""What lm-evaluation-harness's ``local-completions`` model needs of ``/v1/completions``:
``echo`` with ``logprobs`` (prompt-token log-probabilities, the first one null), ``max_tokens: 0``
(the prompt only), batches of prompts as strings or token-id lists, and the greedy check it
derives from ``top_logprobs`` -- against log_softmax of the model's own logits."""
from __future__ import annotations

import json
import os
import subprocess

import httpx
import numpy as np
import pytest

from server_testing import ServerThread, demo_app

PROMPTS = ["The cat sat on the mat. The cat", "Sort: 7 9 1\n1 7"]


@pytest.fixture(scope="module")
def server():
    app = demo_app()
    with ServerThread(app) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            yield app.state.server, http


def reference_logprobs(state, ids: list[int]) -> np.ndarray:
    """log_softmax (float64) of the model's logits ``(L, V)`` over ``ids``, computed directly."""
    import paddle

    model = state.engine.engine.model
    with paddle.no_grad():
        logits = model(paddle.to_tensor([ids])).astype("float32").numpy()[0].astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))


def check_prompt_logprobs(state, ids: list[int], lp: dict, top: int) -> None:
    ref = reference_logprobs(state, ids)
    n = len(ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["tokens"][:n] == [state.tokenizer.decode([t]) for t in ids]
    got = np.array(lp["token_logprobs"][1:n], dtype=np.float64)
    want = ref[np.arange(n - 1), ids[1:]]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    for i in range(1, n):
        tops = lp["top_logprobs"][i]
        assert len(tops) == top
        best = np.sort(ref[i - 1])[::-1][:top]
        np.testing.assert_allclose(sorted(tops.values(), reverse=True), best, atol=1e-5, rtol=0)
        # lm-eval's greedy test: the token's logprob equals the best one exactly
        greedy = lp["token_logprobs"][i] == max(tops.values())
        assert greedy == (int(np.argmax(ref[i - 1])) == ids[i])
    offsets = lp["text_offset"][:n]
    assert offsets[0] == 0 and all(b - a == len(t) for a, b, t in zip(offsets, offsets[1:], lp["tokens"]))


def test_echo_max_tokens_0_batch_equals_log_softmax(server, monkeypatch):
    state, http = server
    ids = [state.tokenizer.encode(p) for p in PROMPTS]
    assert min(len(p) for p in ids) > 7
    for prompt, rows in ((PROMPTS, 256), (ids, 3)):  # strings, then token-id lists in slices
        monkeypatch.setattr("paddlellm.engine.llm_engine.SCORE_ROWS", rows)
        r = http.post("/v1/completions", json={"prompt": prompt, "echo": True, "max_tokens": 0,
                                               "logprobs": 2, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [c["index"] for c in body["choices"]] == [0, 1]
        for choice, p, pids in zip(body["choices"], PROMPTS, ids):
            assert choice["finish_reason"] == "length"
            assert choice["text"] == (p if isinstance(prompt[0], str) else state.tokenizer.decode(pids))
            assert len(choice["logprobs"]["tokens"]) == len(pids)
            check_prompt_logprobs(state, pids, choice["logprobs"], 2)
        n = sum(len(p) for p in ids)
        assert body["usage"] == {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n}


def test_lm_eval_loglikelihood_shape_and_greedy_flag(server):
    """lm-eval (>=0.4.3) sends ``max_tokens: 1`` with ``echo`` and reads
    ``token_logprobs[ctxlen:-1]``: the continuation's logprobs, greedy when each equals the best
    of ``top_logprobs``. One continuation is the model's own greedy one, the other is not."""
    state, http = server
    context = state.tokenizer.encode("Sort: 7 9 1\n1")
    ref = reference_logprobs(state, context)
    best = int(np.argmax(ref[-1]))
    worst = int(np.argmin(ref[-1]))
    requests = [context + [best], context + [worst]]
    r = http.post("/v1/completions", json={"prompt": requests, "echo": True, "max_tokens": 1,
                                           "logprobs": 1, "temperature": 0, "seed": 1234})
    assert r.status_code == 200, r.text
    body = r.json()
    results = []
    for choice, ids in zip(body["choices"], requests):
        lp = choice["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then the generated token
        check_prompt_logprobs(state, ids, lp, 1)
        assert lp["text_offset"][len(ids)] == len(state.tokenizer.decode(ids))
        conts = lp["token_logprobs"][len(context):-1]
        tops = lp["top_logprobs"][len(context):-1]
        results.append((sum(conts), all(t == max(top.values()) for t, top in zip(conts, tops))))
    assert results[0][1] is True and results[1][1] is False
    np.testing.assert_allclose([x for x, _ in results], [ref[-1][best], ref[-1][worst]], atol=1e-5)
    assert body["usage"]["prompt_tokens"] == 2 * (len(context) + 1)
    assert body["usage"]["completion_tokens"] == 2


def test_echo_logprobs_stream_and_n(server):
    state, http = server
    ids = state.tokenizer.encode(PROMPTS[0])
    with http.stream("POST", "/v1/completions",
                     json={"prompt": PROMPTS[0], "echo": True, "max_tokens": 0, "logprobs": 1,
                           "stream": True, "stream_options": {"include_usage": True}}) as r:
        lines = [json.loads(line[6:]) for line in r.iter_lines()
                 if line.startswith("data: ") and line != "data: [DONE]"]
    assert lines[0]["choices"][0]["text"] == PROMPTS[0]
    assert lines[0]["choices"][0]["finish_reason"] == "length"
    check_prompt_logprobs(state, ids, lines[0]["choices"][0]["logprobs"], 1)
    assert lines[-1]["usage"]["prompt_tokens"] == len(ids)
    with http.stream("POST", "/v1/completions",
                     json={"prompt": PROMPTS[0], "echo": True, "max_tokens": 3, "logprobs": 1,
                           "temperature": 0, "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    first = chunks[0]["choices"][0]
    assert first["text"] == PROMPTS[0]
    check_prompt_logprobs(state, ids, first["logprobs"], 1)
    generated = [t for c in chunks[1:] for t in c["choices"][0]["logprobs"]["token_logprobs"]]
    assert len(generated) == 3 and None not in generated
    r = http.post("/v1/completions", json={"prompt": PROMPTS[1], "echo": True, "max_tokens": 0,
                                           "logprobs": 0, "n": 2}).json()
    assert len(r["choices"]) == 2 and r["choices"][0]["logprobs"] == r["choices"][1]["logprobs"]
    assert r["usage"]["prompt_tokens"] == len(state.tokenizer.encode(PROMPTS[1]))


@pytest.mark.parametrize("body,param,words", [
    ({"prompt": "a", "max_tokens": 0}, "max_tokens", "needs echo"),
    ({"prompt": "a", "max_tokens": -1}, "max_tokens", "max_tokens"),
    ({"prompt": "a", "echo": True, "max_tokens": 0, "logprobs": 6}, "logprobs", "logprobs"),
])
def test_errors_are_400_naming_the_field(server, body, param, words):
    _, http = server
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


# ---------------------------------------------------------------------------- lm-eval itself
#: a Python with lm-evaluation-harness installed (dev-only, like the torch oracles)
#: (``make test`` installs it into the oracle environment, ``$PADDLELLM_DEV_PYTHON``)
LMEVAL_PYTHON = (os.environ.get("PADDLELLM_LMEVAL_PYTHON")
                 or os.environ.get("PADDLELLM_DEV_PYTHON", ""))

DOCS = [{"question": "Sort: 7 9 1\n", "choices": ["1 7 9", "9 7 1"], "answer": 0},
        {"question": "The cat sat on the", "choices": ["mat", "moon", "cat"], "answer": 0}]

TASK_YAML = """task: paddlellm_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def _lm_eval_available() -> str:
    if not LMEVAL_PYTHON:
        return ("set PADDLELLM_LMEVAL_PYTHON (or PADDLELLM_DEV_PYTHON: `make test` builds it "
                "with scripts/oracle_env.sh) to a Python with lm-eval installed (dev-only)")
    probe = subprocess.run([LMEVAL_PYTHON, "-c", "import lm_eval"], capture_output=True)
    return "" if probe.returncode == 0 else f"{LMEVAL_PYTHON} cannot import lm_eval"


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing spaces of the context move to the continuation; the
    continuation's ids are the whole's beyond the context's."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = tokenizer.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx):]


@pytest.mark.skipif(bool(_lm_eval_available()), reason=_lm_eval_available() or "available")
def test_lm_eval_local_completions_scores_equal_direct(server, tmp_path):
    """lm-eval's own ``local-completions`` client runs a tiny multiple-choice task (local
    data) against the live server; every choice's loglikelihood and is-greedy flag, and the
    accuracy, equal what the model gives directly."""
    from server_testing import DEMO_MODEL

    state, http = server
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny.yaml").write_text(TASK_YAML.format(data=data))
    out = tmp_path / "out"
    args = (f"model={state.model_name},base_url={str(http.base_url).rstrip('/')}/v1/completions,"
            f"tokenizer={DEMO_MODEL},tokenizer_backend=huggingface,num_concurrent=1,max_retries=1")
    run = subprocess.run([LMEVAL_PYTHON, "-m", "lm_eval", "--model", "local-completions",
                          "--model_args", args, "--tasks", "paddlellm_tiny",
                          "--include_path", str(tmp_path / "tasks"), "--output_path", str(out),
                          "--log_samples"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    samples = [json.loads(line) for f in out.rglob("samples_paddlellm_tiny*.jsonl")
               for line in f.read_text().splitlines() if line.strip()]
    assert len(samples) == len(DOCS)
    correct = 0
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = DOCS[sample["doc_id"]]
        scores = []
        for choice, resp in zip(doc["choices"], sample["filtered_resps"]):
            ctx, cont = _encode_pair(state.tokenizer, doc["question"], " " + choice)
            ref = reference_logprobs(state, ctx + cont)
            rows = ref[np.arange(len(ctx) - 1, len(ctx) + len(cont) - 1), cont]
            greedy = all(int(np.argmax(ref[len(ctx) - 1 + i])) == t for i, t in enumerate(cont))
            assert float(resp[0]) == pytest.approx(float(rows.sum()), abs=1e-4)
            assert str(resp[1]) == str(greedy)
            scores.append(float(rows.sum()))
        correct += int(np.argmax(scores)) == doc["answer"]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["results"]["paddlellm_tiny"]["acc,none"] == pytest.approx(correct / len(DOCS))


GEN_DOCS = [{"question": "What is 2 + 2?", "answer": "4"},
            {"question": "Count from 1 to 5.", "answer": "1 2 3 4 5"},
            {"question": "Sort: 7 9 1", "answer": "1 7 9"}]

GEN_TASK_YAML = """task: paddlellm_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
"""


@pytest.mark.skipif(bool(_lm_eval_available()), reason=_lm_eval_available() or "available")
def test_lm_eval_local_chat_completions_generate_until_equals_direct(server, tmp_path):
    """lm-eval's own ``local-chat-completions`` client runs a tiny generate-until task (local
    data, chat template applied by the server, a stop string) against the live server; each
    generation equals the model's greedy continuation of the rendered chat prompt, cut at the
    stop string, and the exact-match score is the one those give."""
    import paddle

    state, http = server
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in GEN_DOCS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "gen.yaml").write_text(GEN_TASK_YAML.format(data=data))
    out = tmp_path / "out"
    args = (f"model={state.model_name},base_url={str(http.base_url).rstrip('/')}"
            "/v1/chat/completions,num_concurrent=1,max_retries=1")
    run = subprocess.run([LMEVAL_PYTHON, "-m", "lm_eval", "--model", "local-chat-completions",
                          "--model_args", args, "--tasks", "paddlellm_tiny_gen",
                          "--apply_chat_template", "--include_path", str(tmp_path / "tasks"),
                          "--output_path", str(out), "--log_samples"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    samples = [json.loads(line) for f in out.rglob("samples_paddlellm_tiny_gen*.jsonl")
               for line in f.read_text().splitlines() if line.strip()]
    assert len(samples) == len(GEN_DOCS)
    model, tok = state.engine.engine.model, state.tokenizer
    matches = 0
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = GEN_DOCS[sample["doc_id"]]
        ids = tok.apply_chat_template([{"role": "user", "content": doc["question"]}],
                                      add_generation_prompt=True)
        with paddle.no_grad():
            full = model.generate(paddle.to_tensor([ids]), max_new_tokens=12)
        new = [t for t in full.numpy()[0, len(ids):].tolist()]
        eos = tok.eos_token_id
        if eos in new:
            new = new[:new.index(eos)]
        want = tok.decode(new, skip_special_tokens=True).split("\n")[0]
        got = sample["resps"][0][0]
        assert got == want, (doc, got, want)
        matches += int(got.strip() == doc["answer"])
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["results"]["paddlellm_tiny_gen"]["exact_match,none"] == pytest.approx(
        matches / len(GEN_DOCS))
