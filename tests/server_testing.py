"""Test helpers for the server: uvicorn on a free loopback port in a thread, and a fake
engine with ``LLMEngine``'s interface (no Paddle: fast tests of the HTTP layer)."""
from __future__ import annotations

import functools
import math
import socket
import threading
import time
from pathlib import Path

import uvicorn

from paddlellm.engine.sampling import RequestOutput  # no Paddle import

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "core" / "paddlellm" / "assets" / "qwen-demo"


@functools.lru_cache(maxsize=1)
def demo_engine():
    """One real ``LLMEngine`` on the demo model per test process (loading costs seconds)."""
    from paddlellm.engine import LLMEngine

    return LLMEngine.from_pretrained(DEMO_MODEL)


def demo_app(**kwargs):
    """A fresh app over its own engine on the shared demo model (loaded once): an engine
    belongs to one thread, so two apps alive at once each drive their own."""
    from paddlellm.engine import LLMEngine
    from paddlellm.serving import AsyncEngine, build_app

    base = demo_engine()
    engine = LLMEngine(base.model, base.tokenizer, base.config, model_name=base.model_name)
    client = AsyncEngine(engine, max_queue=kwargs.pop("max_queue", 256))
    return build_app(client, model_name=engine.model_name, **kwargs)


class ServerThread:
    """``with ServerThread(app) as url:`` serves ``app`` on 127.0.0.1:<free port>."""

    def __init__(self, app):
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        from paddlellm.serving.http import OpenAIErrorH11Protocol  # as run_server

        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2,
                                http=OpenAIErrorH11Protocol)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class FakeEngine:
    """Deterministic stand-in: token ``k`` of a request is ``(sum(prompt) + seed + k) % 26
    + 64`` (the letters a-z in the demo vocabulary); one token per running request per step,
    ``step_delay`` seconds per step; blocks of ``block_size`` tokens."""

    def __init__(self, *, max_num_seqs: int = 4, block_size: int = 4, num_blocks: int = 64,
                 max_model_len: int = 128, step_delay: float = 0.0):
        from paddlellm import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL)
        self.model_name = "fake-model"
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.step_delay = step_delay
        self.requests: dict[str, dict] = {}
        self.aborted: list[str] = []
        self.added: list[str] = []

    def add_request(self, request_id, prompt_token_ids, params) -> None:
        if len(prompt_token_ids) + params.max_tokens > self.max_model_len:
            raise ValueError(f"request {request_id} is longer than max_model_len {self.max_model_len}")
        self.added.append(request_id)
        self.requests[request_id] = {"prompt": list(prompt_token_ids), "params": params, "out": [],
                                     "text": ""}

    def abort_request(self, request_id) -> None:
        if self.requests.pop(request_id, None) is not None:
            self.aborted.append(request_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def _running(self) -> list[str]:
        return list(self.requests)[: self.max_num_seqs]

    def stats(self) -> dict:
        running = self._running()
        used = sum(math.ceil((len(self.requests[r]["prompt"]) + len(self.requests[r]["out"]))
                             / self.block_size) for r in running)
        return {"num_running": len(running), "num_waiting": len(self.requests) - len(running),
                "kv_blocks_total": self.num_blocks, "kv_blocks_used": used, "num_preemptions": 0}

    def step(self) -> list[RequestOutput]:
        if self.step_delay:
            time.sleep(self.step_delay)
        outs = []
        for rid in self._running():
            req = self.requests[rid]
            p = req["params"]
            token = (sum(req["prompt"]) + (p.seed or 0) + len(req["out"])) % 26 + 64
            req["out"].append(token)
            text = self.tokenizer.decode([token])
            finished, reason = False, None
            if token in p.stop_token_ids:
                finished, reason, text = True, "stop", ""
            elif any(s in req["text"] + text for s in p.stop):
                finished, reason, text = True, "stop", ""
            elif len(req["out"]) >= p.max_tokens:
                finished, reason = True, "length"
            req["text"] += text
            lps = None
            if p.logprobs is not None:
                lps = [{"token_id": token, "logprob": -0.5,
                        "top": [(token, -0.5), (token + 1, -1.5), (token + 2, -2.5)][: p.logprobs]}]
            outs.append(RequestOutput(rid, [token], text, finished, reason, lps,
                                      len(req["prompt"]), len(req["out"])))
            if finished:
                del self.requests[rid]
        return outs
