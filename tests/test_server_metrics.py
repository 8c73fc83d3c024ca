"""/metrics rendered by prometheus_client: existing counters plus latency histograms."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from paddlellm.serving import AsyncEngine, build_app
from server_testing import FakeEngine, ServerThread

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]
HISTOGRAMS = ("time_to_first_token_seconds", "e2e_request_latency_seconds",
              "request_queue_time_seconds", "request_prompt_tokens", "request_generation_tokens")


def _app(engine: FakeEngine):
    return build_app(AsyncEngine(engine, max_queue=8), model_name="fake-model")


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(family, suffix: str, **labels) -> float:
    hits = [s.value for s in family.samples
            if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (family.name, suffix, labels, family.samples)
    return hits[0]


def test_metrics_parse_with_prometheus_client_and_histograms_count_requests():
    engine = FakeEngine()
    with ServerThread(_app(engine)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        http.post(CHAT, json={"messages": HELLO, "max_tokens": 4}).raise_for_status()
        http.post(CHAT, json={"messages": HELLO, "max_tokens": 3, "stream": True}).raise_for_status()
        http.post("/v1/completions", json={"prompt": "ab", "max_tokens": 5}).raise_for_status()
        assert http.post(CHAT, content=b"{").status_code == 400  # never reaches the engine
        r = http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = _families(r.text)
    model = {"model_name": "fake-model"}
    for name in HISTOGRAMS:
        fam = fams[f"paddlellm_{name}"]
        assert fam.type == "histogram"
        assert _sample(fam, "_count", **model) == 3, name
        assert _sample(fam, "_sum", **model) > 0, name
        assert _sample(fam, "_bucket", le="+Inf", **model) == 3, name
    itl = fams["paddlellm_inter_token_latency_seconds"]
    assert _sample(itl, "_count", **model) > 0 and _sample(itl, "_sum", **model) > 0
    assert _sample(fams["paddlellm_request_generation_tokens"], "_sum", **model) == 12
    requests = fams["paddlellm_http_requests"]
    assert requests.type == "counter"
    assert _sample(requests, "_total", route=CHAT, code="200") == 2
    assert _sample(requests, "_total", route=CHAT, code="400") == 1
    assert _sample(requests, "_total", route="/v1/completions", code="200") == 1
    assert _sample(fams["paddlellm_generation_tokens"], "_total", **model) == 12
    assert _sample(fams["paddlellm_kv_blocks_total"], "", **model) == 64
    assert _sample(fams["paddlellm_num_requests_in_flight"], "", **model) == 0


def test_two_apps_in_one_process_keep_their_own_metrics():
    a, b = FakeEngine(), FakeEngine()
    app_a = _app(a)
    _app(b)  # no duplicate-timeseries error
    with ServerThread(app_a) as url, httpx.Client(base_url=url, timeout=30) as http:
        http.post(CHAT, json={"messages": HELLO, "max_tokens": 2}).raise_for_status()
        fams = _families(http.get("/metrics").text)
    assert _sample(fams["paddlellm_e2e_request_latency_seconds"], "_count",
                   model_name="fake-model") == 1
