"""Hub ids (``org/name``) resolve through huggingface_hub's cache; a local folder always wins.

No network: the cache is pre-filled in the hub's layout (``models--org--name/snapshots/<rev>/``
+ ``refs/main``) under a temporary ``HF_HOME``; "the Hub" is a closed port or a local HTTP
server that answers like the Hub does for a missing repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from paddlellm.hub import ModelNotFoundError, is_hub_id, resolve_model_path

DEMO = Path(__file__).resolve().parents[1] / "core" / "paddlellm" / "assets" / "qwen-demo"
REV = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(hf_home: Path, repo_id: str, source: Path = DEMO) -> Path:
    """Put ``source``'s files into ``hf_home``'s hub cache as revision REV of ``repo_id``."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return snapshot


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _resolve_in_subprocess(repo_id: str, env: dict) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom paddlellm.hub import resolve_model_path, ModelNotFoundError\n"
            "try:\n    print(resolve_model_path(sys.argv[1]))\n"
            "except ModelNotFoundError as e:\n    print('ERROR', e)\n")
    return subprocess.run([sys.executable, "-c", code, repo_id], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_hub_id_shape():
    assert is_hub_id("Qwen/Qwen2.5-0.5B-Instruct") and is_hub_id("gpt2")
    for not_id in ("./model", "/abs/model", "a/b/c", "../x", "org/..", "with space/x", ""):
        assert not is_hub_id(not_id), not_id


def test_cached_hub_id_loads_like_the_local_folder(hub_env):
    snapshot = fill_cache(hub_env, "demo-org/tiny-qwen")
    assert resolve_model_path("demo-org/tiny-qwen") == str(snapshot)

    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine.llm_engine import LLMEngine
    from paddlellm.tokenizer import AutoTokenizer

    import paddle

    ids = paddle.to_tensor([[1, 5, 9, 13]])
    hub = AutoModelForCausalLM.from_pretrained("demo-org/tiny-qwen")
    local = AutoModelForCausalLM.from_pretrained(str(DEMO))
    np.testing.assert_array_equal(hub(ids).numpy(), local(ids).numpy())
    assert AutoTokenizer.from_pretrained("demo-org/tiny-qwen").encode("hello") == \
        AutoTokenizer.from_pretrained(str(DEMO)).encode("hello")
    engine = LLMEngine.from_pretrained("demo-org/tiny-qwen", num_blocks=8, max_num_seqs=1)
    assert engine.model_name == "tiny-qwen" and engine.tokenizer is not None


def test_predict_command_takes_a_hub_id(hub_env, tmp_path):
    fill_cache(hub_env, "demo-org/tiny-qwen")
    (tmp_path / "in.jsonl").write_text(json.dumps({"src": "What colour is the eel?"}) + "\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "paddlellm", "predict", "--model_name_or_path",
                           "demo-org/tiny-qwen", "--input_file", str(tmp_path / "in.jsonl"),
                           "--output_file", str(out), "--max_length", "40",
                           "--decode_strategy", "greedy_search"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.read_text().splitlines()[0])
    assert row["src"] == "What colour is the eel?" and row["output_token_ids"]


def test_a_local_folder_wins_over_the_hub(hub_env, tmp_path, monkeypatch):
    fill_cache(hub_env, "demo-org/tiny-qwen")
    local = tmp_path / "work" / "demo-org" / "tiny-qwen"
    local.mkdir(parents=True)
    (local / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_model_path("demo-org/tiny-qwen") == "demo-org/tiny-qwen"


def test_offline_and_not_cached_says_so(hub_env):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path("demo-org/not-downloaded")
    msg = str(info.value)
    assert "'demo-org/not-downloaded'" in msg and "HF_HUB_OFFLINE is set" in msg
    assert str(hub_env / "hub") in msg
    assert isinstance(info.value, FileNotFoundError)  # callers catching that still do


def test_not_a_folder_and_not_an_id():
    with pytest.raises(ModelNotFoundError, match="model folder not found: ./no/such/folder"):
        resolve_model_path("./no/such/folder")


def test_unreachable_hub_uses_the_cache_or_says_why(tmp_path):
    home = tmp_path / "hf"
    snapshot = fill_cache(home, "demo-org/tiny-qwen")
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    cached = _resolve_in_subprocess("demo-org/tiny-qwen", env)
    assert cached.stdout.strip() == str(snapshot), cached.stderr
    missing = _resolve_in_subprocess("demo-org/elsewhere", env)
    assert "ERROR" in missing.stdout and "cannot be reached" in missing.stdout, missing.stderr


class _NotFoundHub(BaseHTTPRequestHandler):
    """Answers every request as the Hub does for a repository that does not exist."""

    def _reply(self):
        body = b'{"error":"Repository Not Found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository Not Found")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _reply

    def log_message(self, *args):
        pass


def test_unknown_hub_id_says_not_found(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _NotFoundHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
               "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
        proc = _resolve_in_subprocess("demo-org/no-such-model", env)
    finally:
        server.shutdown()
    assert "ERROR 'demo-org/no-such-model' is neither a local folder nor a model on the " \
           "Hugging Face Hub" in proc.stdout, proc.stdout + proc.stderr


def test_convert_takes_a_hub_id(hub_env, tmp_path):
    fill_cache(hub_env, "demo-org/tiny-qwen")
    proc = subprocess.run([sys.executable, "-m", "paddlellm", "convert", "demo-org/tiny-qwen",
                           str(tmp_path / "converted"), "--no-check"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "converted" / "config.json").is_file()
    assert list((tmp_path / "converted").glob("*.safetensors"))
