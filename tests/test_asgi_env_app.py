"""`uvicorn paddlellm.serving:app` serves the model named by the environment."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from paddlellm.errors import ConfigError
from paddlellm.serving.env_app import options_from_env


def test_options_from_env(tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    opts = options_from_env({"PADDLELLM_MODEL": "m", "PADDLELLM_MAX_NUM_SEQS": "4",
                             "PADDLELLM_DTYPE": "bfloat16", "PADDLELLM_API_KEY_FILE": str(key)})
    assert opts == {"model_name_or_path": "m", "max_num_seqs": 4, "dtype": "bfloat16",
                    "api_key": "s3cret"}
    with pytest.raises(ConfigError, match="PADDLELLM_MAX_QUEUE"):
        options_from_env({"PADDLELLM_MAX_QUEUE": "many"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_serves_module_app():
    port = _free_port()
    env = dict(os.environ, PADDLELLM_SERVED_MODEL_NAME="demo", PADDLELLM_MAX_NUM_SEQS="2")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "paddlellm.serving:app", "--port",
                             str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=5) as resp:
                    models = json.loads(resp.read())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stdout.read() if proc.poll() is not None else "timeout")
                time.sleep(0.5)
        assert models["data"][0]["id"] == "demo"
        body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 3}).encode()
        req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["choices"][0]["message"]["role"] == "assistant"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
