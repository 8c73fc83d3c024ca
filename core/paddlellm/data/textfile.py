"""Reading the lines of a user's text / jsonl file, with errors that name file and line.

Every data reader goes through :func:`iter_lines`: a binary file (not UTF-8, or with NUL
bytes) is a :class:`~paddlellm.errors.DataFormatError` naming the file, the line and the
byte offset instead of a ``UnicodeDecodeError`` traceback, and no line is read past
``PADDLELLM_MAX_LINE_BYTES`` (default 64 MiB), so a file without newlines never has to fit
in memory at once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, DataFormatError

DEFAULT_MAX_LINE_BYTES = 64 * 2**20


def max_line_bytes() -> int:
    value = os.environ.get("PADDLELLM_MAX_LINE_BYTES", "")
    if not value.strip():
        return DEFAULT_MAX_LINE_BYTES
    try:
        parsed = int(value)
    except ValueError:
        parsed = 0
    if parsed <= 0:
        raise ConfigError(f"environment variable PADDLELLM_MAX_LINE_BYTES={value!r}: expected a "
                          "positive integer (bytes)")
    return parsed


def check_text_file(path: str | Path, what: str = "data file") -> Path:
    """``path`` as a Path once it is known to be an existing regular file."""
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{what} {path} is a directory, expected a file")
    if not path.is_file():
        raise DataFormatError(f"{what} not found: {path}")
    return path


def iter_lines(path: str | Path, what: str = "data file") -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line of a UTF-8 file, line ends kept."""
    path = check_text_file(path, what)
    limit = max_line_bytes()
    offset = 0
    with path.open("rb") as fh:
        for lineno in range(1, 2**62):
            raw = fh.readline(limit + 1)
            if not raw:
                return
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise DataFormatError(
                    f"{path}:{lineno}: line longer than {limit} bytes (a binary file, or raise "
                    "PADDLELLM_MAX_LINE_BYTES)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    f"{path}:{lineno}: not UTF-8 text at byte {offset + exc.start} ({what} must be "
                    "UTF-8 text/jsonl; is it a binary file?)") from None
            if "\x00" in text:
                where = offset + raw.index(b"\x00")
                raise DataFormatError(f"{path}:{lineno}: NUL byte at byte {where}; {what} must "
                                      "be text, not a binary file")
            offset += len(raw)
            if text.endswith("\r\n"):  # as text mode reads Windows line ends
                text = text[:-2] + "\n"
            yield lineno, text


def parse_json_line(line: str, where: str):
    """One jsonl record; invalid or absurdly nested JSON is an error naming ``where``."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{where}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise DataFormatError(f"{where}: JSON nested too deeply") from None


def read_text_documents(path: str | Path) -> list[str]:
    """Documents from ``.txt`` (one per non-empty line) or ``.jsonl`` (``{"text": ...}``)."""
    path = Path(path)
    docs: list[str] = []
    for lineno, line in iter_lines(path):  # a binary file: an error naming file and line
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            record = parse_json_line(line, f"{path}:{lineno}")
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataFormatError(f"{path}:{lineno}: expected an object with a string "
                                      "'text' field")
            docs.append(record["text"])
        else:
            docs.append(line.rstrip("\n"))
    if not docs:
        raise DataFormatError(f"{path}: no documents")
    return docs
