"""Every code block of README.md and docs/*.md runs as written (or says why it cannot).

Python blocks run in a subprocess with this interpreter (the venv's); bash blocks run with
``bash -e -o pipefail`` and the venv's ``bin/`` first on PATH (so ``llm`` is this checkout's),
both in a fresh temporary folder that holds the placeholder paths the docs use
(``path/to/checkpoint``, ``./my-model``: the bundled demo model; ``path/to/torch-checkpoint``:
a small PyTorch ``.bin`` checkpoint). Blocks of data or output (json, yaml, toml, plain) are
not code and are not run.

A block that cannot run here (a training of minutes, a server that runs until stopped, a GPU,
the network, a file only the reader has) is preceded by ``<!-- no-run: reason -->``; the
reason names the test that covers it where there is one. An unmarked block that fails fails
this test, and a marker that precedes no code block is an error too.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*no-run:\s*(?P<reason>\S.*?)\s*-->\s*$")
DEMO = ROOT / "core" / "paddlellm" / "assets" / "qwen-demo"
#: placeholder paths of the docs -> what stands in for them in the block's folder
PLACEHOLDERS = {
    "path/to/checkpoint": DEMO,
    "my-model": DEMO,
    "path/to/torch-checkpoint": ROOT / "plugins" / "models" / "tests" / "fixtures" / "gpt2_bin",
}
TIMEOUT = 300  # seconds per block; the runnable blocks take seconds each


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    no_run: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> tuple[list[Block], list[int]]:
    """The fenced blocks of ``path`` and the lines of markers that precede no block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, stray = [], []
    pending: tuple[int, str] | None = None  # a marker waiting for its block
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            if pending:
                stray.append(pending[0])
            pending = (i + 1, marker.group("reason"))
        elif fence:
            indent, close = len(fence.group("indent")), fence.group("fence")
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(close):
                end += 1
            body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1:end]]
            blocks.append(Block(path, i + 1, fence.group("lang").lower(), "\n".join(body) + "\n",
                                pending[1] if pending else None))
            pending = None
            i = end
        elif line.strip() and pending:
            stray.append(pending[0])  # text between the marker and the next block
            pending = None
        i += 1
    if pending:
        stray.append(pending[0])
    return blocks, stray


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in extract_blocks(doc)[0]]


RUNNABLE = [b for b in all_blocks() if b.lang in LANGUAGES]


def test_markers_precede_code_blocks_and_give_a_reason():
    for doc in DOCS:
        blocks, stray = extract_blocks(doc)
        assert not stray, f"{doc.name}: no-run marker(s) at line(s) {stray} precede no code block"
        for b in blocks:
            if b.no_run is not None:
                assert b.lang in LANGUAGES, f"{b.id}: a no-run marker on a {b.lang or 'plain'} block"
                assert len(b.no_run) >= 10, f"{b.id}: say why it cannot run"
    assert len(RUNNABLE) >= 40  # README + docs: the extraction found the blocks


def test_the_extractor_sees_fences_markers_and_languages(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("intro\n\n<!-- no-run: needs a GPU (tests/test_gpu.py) -->\n```bash\nllm x\n```\n"
                   "\n```python\nprint(1)\n```\n\n```\n$ output\n```\n<!-- no-run: stray -->\n")
    blocks, stray = extract_blocks(doc)
    assert [(b.line, b.lang, b.no_run) for b in blocks] == [
        (4, "bash", "needs a GPU (tests/test_gpu.py)"), (8, "python", None), (12, "", None)]
    assert blocks[1].code == "print(1)\n" and stray == [15]


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    for name, target in PLACEHOLDERS.items():
        link = work / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
    return work


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_code_block_runs(block: Block, tmp_path):
    if block.no_run is not None:
        pytest.skip(f"no-run: {block.no_run}")
    work = _workdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if LANGUAGES[block.lang] == "python":
        script = work / "block.py"
        script.write_text(block.code)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    proc = subprocess.run(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (
        f"{block.id} ({block.lang}) failed with exit code {proc.returncode}; if it cannot run "
        f"here, precede it with <!-- no-run: reason -->\n--- code:\n{block.code}"
        f"--- stdout (end):\n{proc.stdout[-3000:]}\n--- stderr (end):\n{proc.stderr[-3000:]}")
