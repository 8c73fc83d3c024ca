"""Helpers shared by the align plugin's tests: run ``llm run`` in-process, read the run's
``metrics.jsonl``, and a local reward server."""
from __future__ import annotations

import json

from paddlellm.plugin.config import build_run_config
from paddlellm.plugin.manager import get_plugin_manager
from paddlellm.training.compose import run


def llm_run(*args: str) -> dict:
    """``llm run ARGS`` in this process; its summary."""
    manager = get_plugin_manager()
    return run(build_run_config(None, list(args), registry=manager.registry), manager)


def records(out) -> list[dict]:
    """Every record of ``out/metrics.jsonl``."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def by_step(out, key) -> dict[int, float]:
    """``key`` of each record that has it, by step."""
    return {r["step"]: r[key] for r in records(out) if key in r}


class RewardServer:
    """A reward server on localhost answering with ``handler(body) -> (status, bytes, delay)``;
    ``requests`` holds the JSON bodies it received."""

    def __init__(self, handler):
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                status, payload, delay = handler(body)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.requests: list = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/reward"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
