"""Server metrics in the Prometheus text exposition format (version 0.0.4), no dependency.

Counters are kept by the HTTP layer (requests by route and status, prompt and generated
tokens); gauges are read from the engine client's stats at scrape time (running and waiting
requests, requests in flight, KV blocks total and in use, preemptions).
"""
from __future__ import annotations

import threading
from collections import defaultdict

PREFIX = "paddlellm"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServerMetrics:
    """Thread-safe counters plus a renderer that adds the engine's gauges."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.rejected_queue_full = 0

    def count_request(self, route: str, status: int) -> None:
        with self._lock:
            self._requests[(route, int(status))] += 1

    def count_tokens(self, prompt: int = 0, generated: int = 0) -> None:
        with self._lock:
            self.prompt_tokens += int(prompt)
            self.generation_tokens += int(generated)

    def render(self, engine_stats: dict) -> str:
        model = {"model_name": self.model_name}
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
            full = f"{PREFIX}_{name}"
            lines.append(f"# HELP {full} {help_}")
            lines.append(f"# TYPE {full} {kind}")
            for labels, value in samples:
                lines.append(f"{full}{_labels(labels)} {value:g}" if isinstance(value, float)
                             else f"{full}{_labels(labels)} {value}")

        with self._lock:
            requests = sorted(self._requests.items())
            prompt, generated = self.prompt_tokens, self.generation_tokens
        metric("http_requests_total", "counter", "HTTP requests by route and status code.",
               [({"route": r, "code": str(c)}, n) for (r, c), n in requests])
        metric("prompt_tokens_total", "counter", "Prompt tokens processed.", [(model, prompt)])
        metric("generation_tokens_total", "counter", "Tokens generated.", [(model, generated)])
        gauges = [
            ("num_requests_running", "num_running", "Requests in the running batch."),
            ("num_requests_waiting", "num_waiting", "Requests waiting to be scheduled."),
            ("num_requests_in_flight", "num_in_flight", "Requests admitted by the server and not finished."),
            ("kv_blocks_total", "kv_blocks_total", "KV-cache blocks in the pool."),
            ("kv_blocks_used", "kv_blocks_used", "KV-cache blocks in use."),
        ]
        for name, key, help_ in gauges:
            metric(name, "gauge", help_, [(model, int(engine_stats.get(key, 0)))])
        total = engine_stats.get("kv_blocks_total") or 0
        usage = (engine_stats.get("kv_blocks_used", 0) / total) if total else 0.0
        metric("kv_cache_usage_ratio", "gauge", "Fraction of KV-cache blocks in use.",
               [(model, float(usage))])
        metric("num_preemptions_total", "counter", "Requests preempted for lack of KV blocks.",
               [(model, int(engine_stats.get("num_preemptions", 0)))])
        return "\n".join(lines) + "\n"


def parse_prometheus(text: str) -> dict[str, float]:
    """``{"name{labels}": value}`` for every sample line (used by tests and the docs)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples
