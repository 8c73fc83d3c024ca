"""``llm predict`` and ``llm chat``: the inference engine from the command line.

Without ``--model_name_or_path`` both use the bundled instruction-tuned demo model
(``paddlellm/assets/qwen-demo-instruct``). Their engine options are
:class:`~paddlellm.engine.config.EngineConfig`'s (:mod:`.engine_options`). Paddle is imported
only when a command runs.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import typer

from ..engine.config import EngineConfig
from ..errors import PaddleLLMError
from .engine_options import engine_options

# options predict and chat share (typer reads these defaults; they are never mutated)
DECODE_STRATEGY = typer.Option("sampling", "--decode_strategy",
                               help="greedy_search | sampling (top_k=1 is greedy).")
TOP_K = typer.Option(1, "--top_k")
TOP_P = typer.Option(1.0, "--top_p")
TEMPERATURE = typer.Option(1.0, "--temperature")
REPETITION_PENALTY = typer.Option(1.0, "--repetition_penalty")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad options or files end the command with ``error: ...`` (no traceback)."""
    try:
        yield
    except PaddleLLMError:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise PaddleLLMError(str(exc)) from None


#: the engine options each command takes (help, type and default: EngineConfig's)
PREDICT_ENGINE_OPTIONS = (
    "model_name_or_path", "lora_path", "quant_type", "dtype", "device", "attention_kernel",
    "cachekv_int8_type", "block_size", "num_blocks", "kv_cache_bytes", "max_num_batched_tokens",
    "enable_prefix_caching", "speculate_method", "speculate_max_draft_token_num", "speculate_max_ngram_size",
    "speculate_verify_window", "speculate_max_candidate_len")
CHAT_ENGINE_OPTIONS = ("model_name_or_path", "lora_path", "quant_type", "dtype", "device",
                       "attention_kernel", "enable_prefix_caching")


@engine_options(PREDICT_ENGINE_OPTIONS)
def predict(
    config: EngineConfig,
    input_file: Optional[str] = typer.Option(
        None, "--input_file", "--data_file", help="jsonl of {\"src\": ...} (or \"messages\") lines."),
    output_file: str = typer.Option("output.json", "--output_file", help="jsonl written here."),
    batch_size: int = typer.Option(1, "--batch_size", help="Sequences decoded together."),
    src_length: int = typer.Option(1024, "--src_length", help="Max prompt tokens (keeps the end)."),
    max_length: int = typer.Option(2048, "--max_length",
                                   help="Max prompt + generated tokens (capped by the model)."),
    decode_strategy: str = typer.Option(
        "sampling", "--decode_strategy",
        help="greedy_search | sampling (top_k=1 is greedy) | beam_search (with --num_beams)."),
    num_beams: int = typer.Option(1, "--num_beams", help="Beams of --decode_strategy beam_search."),
    top_k: int = TOP_K,
    top_p: float = TOP_P,
    temperature: float = TEMPERATURE,
    repetition_penalty: float = REPETITION_PENALTY,
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (per request)."),
    prefix_path: Optional[str] = typer.Option(
        None, "--prefix_path", help="peft prefix-tuning adapter (decodes with model.generate)."),
    chat_template: bool = typer.Option(True, "--chat_template/--no_chat_template",
                                       help="Render src with the tokenizer's chat template."),
    benchmark: bool = typer.Option(False, "--benchmark",
                                   help="Decode to max_length; report tokens/s and latency p50/p90/p99."),
    inference_model: bool = typer.Option(False, "--inference_model",
                                         help="PaddleNLP: accepted; the engine is always the inference path."),
    mode: str = typer.Option("dynamic", "--mode", help="PaddleNLP: dynamic (static: no exported graph here)."),
    block_attn: bool = typer.Option(False, "--block_attn",
                                    help="PaddleNLP: accepted; the KV cache is always paged."),
    append_attn: bool = typer.Option(False, "--append_attn",
                                     help="PaddleNLP: accepted; the KV cache is always paged."),
    avx_model: bool = typer.Option(False, "--avx_model", help="PaddleNLP: CPU inference (the engine)."),
    avx_type: Optional[str] = typer.Option(None, "--avx_type",
                                           help="PaddleNLP: fp16 | bf16 | int8 weights on CPU."),
) -> None:
    """Batch inference: jsonl prompts in, jsonl predictions out (PaddleNLP predictor options).

    Without --input_file a few example prompts are answered and printed.

    Example: llm predict --input_file in.jsonl --output_file out.jsonl --batch_size 8
    """
    values = dict(locals())
    from ..engine.predict import PredictOptions, predict as run_predict
    from ..plugin.paddlenlp_args import predictor_flags

    with _user_errors():
        values.pop("config")
        compat = {k: values.pop(k) for k in ("inference_model", "mode", "block_attn",
                                             "append_attn", "avx_model", "avx_type")}
        dtype, quant_type, notes = predictor_flags(
            **compat, cachekv_int8_type=config.cachekv_int8_type, dtype=config.dtype,
            quant_type=config.quant_type)
        config = EngineConfig.build(config, dtype=dtype, quant_type=quant_type)
        if (config.speculate_verify_window, config.speculate_max_candidate_len) != (2, 5):
            notes.append("--speculate_verify_window/--speculate_max_candidate_len tune "
                         "PaddleNLP's approximate TopP+window verification; drafts are verified "
                         "exactly here (greedy match / rejection sampling), so they change nothing")
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        run_predict(PredictOptions(engine=config, **values),
                    log=lambda msg: typer.echo(msg, err=True))


@engine_options(CHAT_ENGINE_OPTIONS)
def chat(
    config: EngineConfig,
    system: Optional[str] = typer.Option(None, "--system", help="System message."),
    max_length: int = typer.Option(256, "--max_length", help="Max tokens per reply."),
    decode_strategy: str = DECODE_STRATEGY,
    top_k: int = TOP_K,
    top_p: float = TOP_P,
    temperature: float = TEMPERATURE,
    repetition_penalty: float = REPETITION_PENALTY,
    seed: Optional[int] = typer.Option(None, "--seed"),
) -> None:
    """Chat in the terminal with the model's chat template; replies stream token by token.

    Type /reset to start a new conversation and /exit (or end of input) to quit.
    """
    from ..engine.chat import chat_loop
    from ..engine.llm_engine import LLMEngine
    from ..engine.predict import PredictOptions, sampling_params

    with _user_errors():
        opts = PredictOptions(decode_strategy=decode_strategy, top_k=top_k, top_p=top_p,
                              temperature=temperature, repetition_penalty=repetition_penalty,
                              seed=seed)
        params = sampling_params(opts, max_tokens=max_length)
        engine = LLMEngine.from_config(config.replace(max_num_seqs=1))
        chat_loop(engine, params, sys.stdin, sys.stdout, system=system,
                  interactive=sys.stdin.isatty())
