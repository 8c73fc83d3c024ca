"""``llm chat`` driven through a pipe: template, streaming, /reset, /exit, history."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import paddle

from paddlellm.engine import LLMEngine, SamplingParams
from paddlellm.engine.chat import chat_loop, render


def greedy_reply(engine, messages, n):
    ids = render(engine.tokenizer, messages)
    out = engine.model.generate(paddle.to_tensor([ids]), max_new_tokens=n)
    new = out.numpy()[0, len(ids):].tolist()
    eos = engine.model.generation_config["eos_token_id"]
    new = new[:new.index(eos)] if eos in new else new
    return engine.tokenizer.decode(new, skip_special_tokens=True)


def test_piped_chat_streams_replies_resets_and_exits():
    proc = subprocess.run(
        [sys.executable, "-m", "paddlellm", "chat", "--max_length", "12",
         "--decode_strategy", "greedy_search"],
        input="Reverse: a b c\nSort: 2 1\n/reset\nSort: 2 1\n/exit\nnever read\n",
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    replies = [line[len("assistant> "):] for line in proc.stdout.splitlines()
               if line.startswith("assistant> ")]
    assert len(replies) == 3 and "(history cleared)" in proc.stdout
    engine = LLMEngine.from_pretrained(None)
    first = [{"role": "user", "content": "Reverse: a b c"}]
    assert replies[0] == greedy_reply(engine, first, 12)
    second = first + [{"role": "assistant", "content": replies[0]},
                      {"role": "user", "content": "Sort: 2 1"}]
    assert replies[1] == greedy_reply(engine, second, 12)  # the history is in the prompt
    assert replies[2] == greedy_reply(engine, second[2:], 12)  # /reset forgot it


def test_chat_loop_streams_token_by_token_and_trims_history():
    engine = LLMEngine.from_pretrained(None, max_num_seqs=1)

    class Recorder(io.StringIO):
        writes: list[str] = []

        def write(self, s):
            self.writes.append(s)
            return super().write(s)

    out = Recorder()
    # eight turns overflow the 128-token context (the instruct demo model answers briefly)
    inp = io.StringIO("Repeat: a b c d e f\n" * 8)
    history = chat_loop(engine, SamplingParams(max_tokens=10, temperature=0), inp, out,
                        system="Be brief.", interactive=False)
    streamed = [w for w in out.writes if w not in ("assistant> ", "\n")]
    assert len(streamed) > 4  # replies arrive in pieces, not at once
    assert history[0] == {"role": "system", "content": "Be brief."}
    assert len(render(engine.tokenizer, history[:-1])) <= engine.max_model_len
    assert len(history) < 1 + 2 * 8  # oldest turns were dropped to fit
    assert engine.stats()["kv_blocks_used"] == 0
