"""``llm predict`` and ``llm chat``: the inference engine from the command line.

Without ``--model_name_or_path`` both use the bundled instruction-tuned demo model
(``paddlellm/assets/qwen-demo-instruct``). Paddle is imported only
when a command runs.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import typer

from ..errors import PaddleLLMError

MODEL_HELP = ("Checkpoint directory (Hugging Face layout) or a --peft run's adapter folder "
              "(loaded on the base it names); default: the bundled instruction-tuned demo "
              "model.")
# options predict and chat share (typer reads these defaults; they are never mutated)
DECODE_STRATEGY = typer.Option("sampling", "--decode_strategy",
                               help="greedy_search | sampling (top_k=1 is greedy).")
TOP_K = typer.Option(1, "--top_k")
TOP_P = typer.Option(1.0, "--top_p")
TEMPERATURE = typer.Option(1.0, "--temperature")
REPETITION_PENALTY = typer.Option(1.0, "--repetition_penalty")
LORA_PATH = typer.Option(None, "--lora_path", help="peft adapter to merge.")
DTYPE = typer.Option("float32", "--dtype")
DEVICE = typer.Option(None, "--device", help="cpu, gpu:0, ... (default: auto).")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad options or files end the command with ``error: ...`` (no traceback)."""
    try:
        yield
    except PaddleLLMError:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise PaddleLLMError(str(exc)) from None


def predict(
    model_name_or_path: Optional[str] = typer.Option(None, help=MODEL_HELP),
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
    lora_path: Optional[str] = LORA_PATH,
    prefix_path: Optional[str] = typer.Option(
        None, "--prefix_path", help="peft prefix-tuning adapter (decodes with model.generate)."),
    quant_type: Optional[str] = typer.Option(None, "--quant_type",
                                             help="e.g. weight_only_int8 (quant plugin)."),
    dtype: str = DTYPE,
    device: Optional[str] = DEVICE,
    block_size: int = typer.Option(64, "--block_size", help="Tokens per KV-cache block."),
    num_blocks: Optional[int] = typer.Option(None, "--num_blocks",
                                             help="KV-cache blocks (default: from a 1 GiB budget)."),
    chat_template: bool = typer.Option(True, "--chat_template/--no_chat_template",
                                       help="Render src with the tokenizer's chat template."),
    benchmark: bool = typer.Option(False, "--benchmark",
                                   help="Decode to max_length; report tokens/s and latency p50/p90/p99."),
    cachekv_int8_type: Optional[str] = typer.Option(
        None, "--cachekv_int8_type", help="static: the int8 KV cache of an a8w8c8 checkpoint "
        "(checked); PaddleNLP's deprecated dynamic is refused with a hint."),
    speculate_method: Optional[str] = typer.Option(
        None, "--speculate_method", help="None | inference_with_reference (n-gram prompt lookup "
        "drafts, verified exactly: output as without it)."),
    speculate_max_draft_token_num: int = typer.Option(
        1, "--speculate_max_draft_token_num", help="Draft tokens proposed per step."),
    speculate_max_ngram_size: int = typer.Option(
        1, "--speculate_max_ngram_size", help="Longest n-gram matched to find drafts."),
    speculate_verify_window: int = typer.Option(
        2, "--speculate_verify_window", help="PaddleNLP TopP+window verify; accepted, unused: "
        "verification here is exact."),
    speculate_max_candidate_len: int = typer.Option(
        5, "--speculate_max_candidate_len", help="PaddleNLP TopP+window verify; accepted, "
        "unused: verification here is exact."),
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
    from ..paddlenlp_args import predictor_flags

    with _user_errors():
        compat = {k: values.pop(k) for k in ("inference_model", "mode", "block_attn",
                                             "append_attn", "avx_model", "avx_type")}
        values["dtype"], values["quant_type"], notes = predictor_flags(
            **compat, cachekv_int8_type=cachekv_int8_type, dtype=dtype, quant_type=quant_type)
        if (speculate_verify_window, speculate_max_candidate_len) != (2, 5):
            notes.append("--speculate_verify_window/--speculate_max_candidate_len tune "
                         "PaddleNLP's approximate TopP+window verification; drafts are verified "
                         "exactly here (greedy match / rejection sampling), so they change nothing")
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        run_predict(PredictOptions(**values), log=lambda msg: typer.echo(msg, err=True))


def chat(
    model_name_or_path: Optional[str] = typer.Option(None, help=MODEL_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="System message."),
    max_length: int = typer.Option(256, "--max_length", help="Max tokens per reply."),
    decode_strategy: str = DECODE_STRATEGY,
    top_k: int = TOP_K,
    top_p: float = TOP_P,
    temperature: float = TEMPERATURE,
    repetition_penalty: float = REPETITION_PENALTY,
    seed: Optional[int] = typer.Option(None, "--seed"),
    lora_path: Optional[str] = LORA_PATH,
    dtype: str = DTYPE,
    device: Optional[str] = DEVICE,
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
        engine = LLMEngine.from_pretrained(model_name_or_path, dtype=dtype, lora_path=lora_path,
                                           max_num_seqs=1, device=device)
        chat_loop(engine, params, sys.stdin, sys.stdout, system=system,
                  interactive=sys.stdin.isatty())
