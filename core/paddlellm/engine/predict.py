"""``llm predict``: batch inference from jsonl to jsonl on the engine (PaddleNLP's predictor
options), with a ``--benchmark`` mode that reports throughput and latency percentiles."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pydantic import BaseModel, ConfigDict, model_validator

from ..data.sft import read_jsonl
from ..errors import DataFormatError
from .config import EngineConfig
from .sampling import SamplingParams

DECODE_STRATEGIES = ("greedy_search", "sampling", "beam_search")


class PredictOptions(BaseModel):
    """What ``llm predict`` runs: the engine's :class:`EngineConfig` (``engine``) plus the
    predictor's own options (PaddleNLP names). Engine options may also be given flat
    (``PredictOptions(lora_path=...)``): they go into ``engine``. ``batch_size`` is the
    number of sequences decoded together (the engine's ``max_num_seqs``, times ``num_beams``
    for beam search)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: EngineConfig = EngineConfig()
    input_file: str | None = None
    output_file: str = "output.json"
    batch_size: int = 1
    src_length: int = 1024
    max_length: int = 2048
    decode_strategy: str = "sampling"
    num_beams: int = 1
    top_k: int = 1
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    prefix_path: str | None = None
    chat_template: bool = True
    benchmark: bool = False

    @model_validator(mode="before")
    @classmethod
    def _flat_engine_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        flat = {k: data[k] for k in data if k in EngineConfig.model_fields}
        if not flat:
            return data
        rest = {k: v for k, v in data.items() if k not in flat}
        engine = rest.get("engine")
        if isinstance(engine, dict):
            engine = EngineConfig(**engine)
        rest["engine"] = EngineConfig.build(engine, **flat)
        return rest


#: prompts ``llm predict`` answers when no --input_file is given (PaddleNLP's predictor has
#: built-in examples too): demo-task questions the bundled model answers, and a greeting
EXAMPLE_PROMPTS = ("What colour is the eel?", "Sort: 4 1 3", "Hello, who are you?")


def sampling_params(o: PredictOptions, max_tokens: int, ignore_eos: bool = False) -> SamplingParams:
    """Decode options as :class:`SamplingParams`; ``sampling`` with ``top_k=1`` is greedy."""
    if o.decode_strategy not in DECODE_STRATEGIES:
        raise ValueError(f"unknown --decode_strategy '{o.decode_strategy}'; valid: "
                         f"{', '.join(DECODE_STRATEGIES)}")
    if o.decode_strategy == "beam_search" and o.num_beams < 2:
        raise ValueError(f"--decode_strategy beam_search needs --num_beams >= 2 (got {o.num_beams})")
    if o.decode_strategy != "beam_search" and o.num_beams > 1:
        raise ValueError(f"--num_beams {o.num_beams} needs --decode_strategy beam_search")
    greedy = o.decode_strategy == "greedy_search" or o.top_k == 1
    return SamplingParams(max_tokens=max_tokens, temperature=0.0 if greedy else o.temperature,
                          top_k=o.top_k, top_p=o.top_p, repetition_penalty=o.repetition_penalty,
                          seed=o.seed, ignore_eos=ignore_eos)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """jsonl records with ``src`` (a string, or a list of user turns with ``tgt`` the earlier
    answers) or OpenAI ``messages``; errors name file and line."""
    def parse(record: Any, where: str) -> dict[str, Any]:
        if not isinstance(record, dict) or not ("src" in record or "messages" in record):
            raise DataFormatError(f"{where}: expected an object with 'src' (or 'messages')")
        record["_messages"] = record_messages(record, where)
        return record

    return read_jsonl(path, parse, empty="no records", what="input file")


def record_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    if "messages" in record:
        msgs = record["messages"]
        if not isinstance(msgs, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
                for m in msgs):
            raise DataFormatError(f"{where}: 'messages' must be a list of {{role, content}}")
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    src = record["src"]
    src = [src] if isinstance(src, str) else src
    if not isinstance(src, list) or not src or not all(isinstance(s, str) for s in src):
        raise DataFormatError(f"{where}: 'src' must be a string or a non-empty list of strings")
    tgt = record.get("tgt", [])
    tgt = [tgt] if isinstance(tgt, str) else list(tgt or [])
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for i, s in enumerate(src):  # earlier turns: user src[i], assistant tgt[i]
        messages.append({"role": "user", "content": s})
        if i < len(src) - 1:
            if i >= len(tgt):
                raise DataFormatError(f"{where}: multi-turn 'src' needs the earlier answers in 'tgt'")
            messages.append({"role": "assistant", "content": tgt[i]})
    return messages


def encode_prompt(tokenizer, messages: list[dict[str, str]], chat_template: bool) -> list[int]:
    """Token ids of a prompt: the chat template with a generation prompt when the tokenizer
    has one (as PaddleNLP's predictor does), else the plain text of the last user turn."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template(messages, tokenize=True,
                                                  add_generation_prompt=True))
    return list(tokenizer.encode(messages[-1]["content"]))


def write_predictions(path: str, records: list[dict[str, Any]],
                      results: list[dict[str, Any]]) -> None:
    """One jsonl row per record: its fields plus ``output``, ``output_token_ids``,
    ``finish_reason``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r, res in zip(records, results):
            row = {k: v for k, v in r.items() if k != "_messages"}
            row.update(output=res["text"], output_token_ids=res["token_ids"],
                       finish_reason=res["finish_reason"])
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


def predict(o: PredictOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``o``; writes ``o.output_file`` and returns ``{"results", "metrics"}``."""
    from .llm_engine import LLMEngine

    if o.batch_size < 1 or o.src_length < 1 or o.max_length < 2:
        raise ValueError("--batch_size and --src_length must be >= 1, --max_length >= 2")
    sampling_params(o, 1)  # option errors before the model loads
    examples = o.input_file is None
    if examples:
        log("no --input_file: answering example prompts (give a jsonl of {\"src\": ...} lines)")
        records = [{"src": p, "_messages": [{"role": "user", "content": p}]}
                   for p in EXAMPLE_PROMPTS]
    else:
        records = read_records(o.input_file)
    if o.prefix_path:
        return _predict_with_prefix(o, records, log)
    spec = o.engine.speculative
    beams = o.num_beams if o.decode_strategy == "beam_search" else 1
    engine = LLMEngine.from_config(o.engine.replace(max_num_seqs=o.batch_size * beams))
    if engine.tokenizer is None:
        raise DataFormatError(f"{o.engine.model_name_or_path}: no tokenizer.json to encode "
                              f"'src' with")
    total_len = min(o.max_length, engine.max_model_len)
    prompts, params = [], []
    for r in records:
        ids = encode_prompt(engine.tokenizer, r["_messages"], o.chat_template)
        ids = ids[-min(o.src_length, total_len - 1):]  # keep the end of over-long inputs
        prompts.append(ids)
        params.append(sampling_params(o, total_len - len(ids), ignore_eos=o.benchmark))
    starts: dict[str, float] = {}
    first: dict[str, float] = {}
    done: dict[str, float] = {}

    def on_output(out) -> None:
        now = time.perf_counter()
        first.setdefault(out.request_id, now)
        if out.finished:
            done[out.request_id] = now

    t0 = time.perf_counter()
    if o.decode_strategy == "beam_search":
        if spec:
            log("note: --speculate_method is not used with beam search")
        results = engine.beam_search(prompts, o.num_beams, [p.max_tokens for p in params],
                                     repetition_penalty=o.repetition_penalty,
                                     ignore_eos=o.benchmark)
        for i in range(len(results)):
            first[str(i)] = done[str(i)] = time.perf_counter()
    else:
        results = engine.generate(prompts, params, on_output=on_output)
    elapsed = time.perf_counter() - t0
    write_predictions(o.output_file, records, results)
    n_out = sum(len(res["token_ids"]) for res in results)
    latencies = sorted(done.values())
    lat = [t - t0 for t in latencies]  # every request is queued at t0
    ttft = [t - t0 for t in first.values()]
    metrics = {"requests": len(records), "prompt_tokens": sum(map(len, prompts)),
               "output_tokens": n_out, "seconds": elapsed,
               "output_tokens_per_s": n_out / elapsed if elapsed else 0.0,
               "latency_p50_s": percentile(lat, 50), "latency_p90_s": percentile(lat, 90),
               "latency_p99_s": percentile(lat, 99), "ttft_p50_s": percentile(ttft, 50),
               "num_preemptions": engine.stats()["num_preemptions"],
               "tokens_per_seq_step": engine.stats()["tokens_per_seq_step"]}
    if examples:
        for r, res in zip(records, results):
            log(f"{r['src']!r} -> {res['text']!r}")
    log(f"wrote {len(results)} predictions to {o.output_file}")
    if o.benchmark:
        log(f"benchmark: {metrics['requests']} requests, batch_size {o.batch_size}, "
            f"{metrics['prompt_tokens']} prompt + {n_out} output tokens in {elapsed:.2f} s: "
            f"{metrics['output_tokens_per_s']:.1f} output tokens/s; latency p50 "
            f"{metrics['latency_p50_s']:.3f} s, p90 {metrics['latency_p90_s']:.3f} s, p99 "
            f"{metrics['latency_p99_s']:.3f} s; time to first token p50 {metrics['ttft_p50_s']:.3f} s")
    if spec:
        stats = engine.stats()
        log(f"speculative decoding ({o.engine.speculate_method}): {stats['tokens_per_seq_step']:.2f} "
            f"tokens per sequence per step; {stats['spec_accepted_tokens']} of "
            f"{stats['spec_draft_tokens']} draft tokens accepted")
    return {"results": results, "metrics": metrics}


def _predict_with_prefix(o: PredictOptions, records: list[dict[str, Any]],
                         log: Callable[[str], None]) -> dict[str, Any]:
    """``--prefix_path``: batches through ``model.generate`` with the prefix in its contiguous
    cache (the paged engine has no per-sequence prefix slots, and a prefix cannot be merged
    into the weights as LoRA is)."""
    from ..modeling.auto import AutoModelForCausalLM
    from ..modeling.evaluation import left_pad
    from ..tokenizer import AutoTokenizer
    from ..plugin.device import setup_device
    from ..plugin.manager import get_plugin_manager
    from .llm_engine import default_model_path

    e = o.engine
    if e.quant_type or e.lora_path:
        raise ValueError("--prefix_path cannot be combined with --lora_path or --quant_type")
    if o.decode_strategy == "beam_search":
        raise ValueError("--prefix_path cannot be combined with --decode_strategy beam_search")
    setup_device(e.device, get_plugin_manager())
    path = Path(e.model_name_or_path) if e.model_name_or_path else default_model_path()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=e.dtype,
                                                 prefix_path=o.prefix_path)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    greedy = sampling_params(o, 1).temperature == 0.0
    total_len = min(o.max_length, model.config.max_position_embeddings)
    prompts = [encode_prompt(tokenizer, r["_messages"], o.chat_template)[-min(o.src_length, total_len - 1):]
               for r in records]
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for start in range(0, len(prompts), o.batch_size):
        rows = prompts[start:start + o.batch_size]
        ids, mask = left_pad(rows, pad)  # (B, T)
        # each row may grow to total_len (and is cut there below); learned position tables
        # must also hold the longest prompt's last position
        budget = total_len - min(map(len, rows))
        if getattr(model.config, "position", "rope") == "learned":
            budget = min(budget, model.config.max_position_embeddings - ids.shape[1])
        out = model.generate(ids, attention_mask=mask, max_new_tokens=budget,
                             decode_strategy="greedy_search" if greedy else "sampling",
                             top_k=o.top_k, top_p=o.top_p, temperature=o.temperature,
                             repetition_penalty=o.repetition_penalty, seed=o.seed,
                             eos_token_id=eos, pad_token_id=pad)
        for prompt, row in zip(rows, np.asarray(out.numpy())[:, ids.shape[1]:].tolist()):
            row = row[:total_len - len(prompt)]
            stop = eos is not None and eos in row
            new = row[:row.index(eos) + 1] if stop else row
            results.append({"token_ids": new, "finish_reason": "stop" if stop else "length",
                            "text": tokenizer.decode(new, skip_special_tokens=True)})
    elapsed = time.perf_counter() - t0
    write_predictions(o.output_file, records, results)
    n_out = sum(len(res["token_ids"]) for res in results)
    log(f"wrote {len(results)} predictions to {o.output_file} (prefix tuning: model.generate)")
    metrics = {"requests": len(records), "output_tokens": n_out, "seconds": elapsed,
               "output_tokens_per_s": n_out / elapsed if elapsed else 0.0}
    return {"results": results, "metrics": metrics}
