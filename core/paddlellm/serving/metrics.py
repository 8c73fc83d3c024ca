"""Server metrics in the Prometheus text exposition format (0.0.4), rendered by
``prometheus_client`` from a per-app :class:`CollectorRegistry` (several apps in one process
do not collide).

Counters are kept by the HTTP layer (requests by route and status, prompt and generated
tokens); gauges are read from the engine client's stats at scrape time (running and waiting
requests, requests in flight, KV blocks total, in use and holding cached prefixes,
preemptions, and the prefix cache's queried and hit prompt tokens -- vLLM's
``prefix_cache_queries``/``prefix_cache_hits``: the hit rate is
``rate(paddlellm_prefix_cache_hits_total) / rate(paddlellm_prefix_cache_queries_total)``). Latency histograms
(vLLM's names, ``paddlellm_`` prefix) are observed per HTTP request by :class:`RequestTimer`:
queue (admission) time, time to first token, inter-token latency, end-to-end latency, and the
prompt and generation token counts.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Callable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "paddlellm"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# seconds; vLLM-like spreads, covering CPU-speed serving (slow) as well as GPU (fast)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
               0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0)
QUEUE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000,
                 50000, 100000, 200000)


class ServerMetrics:
    """Thread-safe counters and histograms plus a renderer that adds the engine's gauges."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.rejected_queue_full = 0
        self._engine_stats: Callable[[], dict] = dict
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

        def hist(name: str, help_: str, buckets) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", help_, ["model_name"], buckets=buckets,
                             registry=self.registry).labels(model_name=model_name)

        self.time_to_first_token = hist(
            "time_to_first_token_seconds", "Time from admission request to the first generated "
            "token, per HTTP request.", TTFT_BUCKETS)
        self.inter_token_latency = hist(
            "inter_token_latency_seconds", "Time between successive generated outputs of a "
            "request.", ITL_BUCKETS)
        self.e2e_request_latency = hist(
            "e2e_request_latency_seconds", "Time from admission request to the last output, "
            "per HTTP request.", E2E_BUCKETS)
        self.request_queue_time = hist(
            "request_queue_time_seconds", "Time a request waited to be admitted (slots "
            "reserved and accepted by the engine).", QUEUE_BUCKETS)
        self.request_prompt_tokens = hist(
            "request_prompt_tokens", "Prompt tokens per HTTP request (all choices).",
            TOKEN_BUCKETS)
        self.request_generation_tokens = hist(
            "request_generation_tokens", "Generated tokens per HTTP request (all choices).",
            TOKEN_BUCKETS)

    def count_request(self, route: str, status: int) -> None:
        with self._lock:
            self._requests[(route, int(status))] += 1

    def count_tokens(self, prompt: int = 0, generated: int = 0) -> None:
        with self._lock:
            self.prompt_tokens += int(prompt)
            self.generation_tokens += int(generated)
        self.request_prompt_tokens.observe(int(prompt))
        self.request_generation_tokens.observe(int(generated))

    def timer(self) -> "RequestTimer":
        return RequestTimer(self)

    def render(self, engine_stats: dict) -> str:
        with self._lock:  # one scrape at a time sees its own engine stats
            self._engine_stats = lambda: engine_stats
            try:
                return generate_latest(self.registry).decode("utf-8")
            finally:
                self._engine_stats = dict

    def _snapshot(self):
        return sorted(self._requests.items()), self.prompt_tokens, self.generation_tokens


class RequestTimer:
    """The timings of one HTTP request: a few ``time.monotonic()`` calls on the event loop;
    each histogram is observed once (the inter-token one once per output)."""

    __slots__ = ("metrics", "start", "last", "first", "done")

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics
        self.start = time.monotonic()
        self.last: float | None = None
        self.first = False
        self.done = False

    def admitted(self) -> None:
        self.metrics.request_queue_time.observe(time.monotonic() - self.start)

    def output(self) -> None:
        now = time.monotonic()
        if self.last is None:
            self.metrics.time_to_first_token.observe(now - self.start)
        else:
            self.metrics.inter_token_latency.observe(now - self.last)
        self.last = now

    def finish(self) -> None:
        """The end-to-end latency (to the last output) of a request that produced any."""
        if self.done or self.last is None:
            return
        self.done = True
        self.metrics.e2e_request_latency.observe(self.last - self.start)


class _Collector:
    """Counters and the engine's gauges, read at scrape time (under ``ServerMetrics._lock``)."""

    def __init__(self, metrics: ServerMetrics):
        self.m = metrics

    def describe(self):
        return []

    def collect(self):
        requests, prompt, generated = self.m._snapshot()
        stats = self.m._engine_stats()
        model = [self.m.model_name]
        name = lambda n: f"{PREFIX}_{n}"  # noqa: E731
        c = CounterMetricFamily(name("http_requests"), "HTTP requests by route and status code.",
                                labels=["code", "route"])
        for (route, code), n in requests:
            c.add_metric([str(code), route], n)
        yield c
        for key, help_, value in (("prompt_tokens", "Prompt tokens processed.", prompt),
                                  ("generation_tokens", "Tokens generated.", generated)):
            c = CounterMetricFamily(name(key), help_, labels=["model_name"])
            c.add_metric(model, value)
            yield c
        gauges = [
            ("num_requests_running", "num_running", "Requests in the running batch."),
            ("num_requests_waiting", "num_waiting", "Requests waiting to be scheduled."),
            ("num_requests_in_flight", "num_in_flight", "Requests admitted by the server and not finished."),
            ("kv_blocks_total", "kv_blocks_total", "KV-cache blocks in the pool."),
            ("kv_blocks_used", "kv_blocks_used", "KV-cache blocks in use."),
            ("kv_blocks_cached", "kv_blocks_cached", "KV-cache blocks holding a reusable "
                                                     "prefix (in use or evictable)."),
        ]
        for key, stat, help_ in gauges:
            g = GaugeMetricFamily(name(key), help_, labels=["model_name"])
            g.add_metric(model, int(stats.get(stat, 0)))
            yield g
        total = stats.get("kv_blocks_total") or 0
        g = GaugeMetricFamily(name("kv_cache_usage_ratio"), "Fraction of KV-cache blocks in use.",
                              labels=["model_name"])
        g.add_metric(model, (stats.get("kv_blocks_used", 0) / total) if total else 0.0)
        yield g
        c = CounterMetricFamily(name("num_preemptions"), "Requests preempted for lack of KV blocks.",
                                labels=["model_name"])
        c.add_metric(model, int(stats.get("num_preemptions", 0)))
        yield c
        for key, help_ in (("prefix_cache_queries", "Prompt tokens looked up in the prefix "
                                                    "cache when requests were admitted."),
                           ("prefix_cache_hits", "Prompt tokens found in the prefix cache "
                                                 "(their keys/values reused, not computed).")):
            c = CounterMetricFamily(name(key), help_, labels=["model_name"])
            c.add_metric(model, int(stats.get(key, 0)))
            yield c


def parse_prometheus(text: str) -> dict[str, float]:
    """``{"name{labels}": value}`` for every sample line (used by tests and the docs)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples
