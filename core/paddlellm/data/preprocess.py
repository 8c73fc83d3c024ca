"""``llm preprocess``: jsonl / text -> the ``.bin`` / ``.idx`` indexed pretraining format.

The input is streamed: chunks of lines are read, tokenized (batched in the Rust tokenizer;
with ``workers > 1`` in that many processes, at most ``2 * workers`` chunks in flight) and
appended to ``<prefix>.bin`` in input order, so memory stays bounded by the chunk window plus
12 bytes per document (its size and index entry). ``.jsonl`` / ``.json`` lines are objects
with a string field ``json_key``; any other file is plain text with one document per line.
Blank lines and documents that tokenize to nothing are skipped; a malformed line is a
:class:`DataFormatError` naming file and line, and leaves no output behind.
"""
from __future__ import annotations

import json
import os
import sys
from collections import deque
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DataFormatError
from .textfile import iter_lines, parse_json_line

CHUNK_LINES = 512

_worker_tokenizer = None  # set in each worker process


def _documents(path: Path, lines: list[tuple[int, str]], json_key: str | None
               ) -> list[tuple[int, str]]:
    out = []
    for lineno, line in lines:
        if json_key is None:
            out.append((lineno, line.rstrip("\r\n")))
            continue
        record = parse_json_line(line, f"{path}:{lineno}")
        if not isinstance(record, dict) or not isinstance(record.get(json_key), str):
            raise DataFormatError(f"{path}:{lineno}: expected an object with a string "
                                  f"'{json_key}' field")
        out.append((lineno, record[json_key]))
    return out


def _encode_chunk(tokenizer, path: Path, lines: list[tuple[int, str]], json_key: str | None,
                  eos: int | None, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(all token ids of the chunk back to back, tokens per document) as arrays."""
    texts = [text for _, text in _documents(path, lines, json_key)]
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    if eos is not None:
        for ids in encoded:
            if ids:  # an empty document stays empty (and is skipped)
                ids.append(eos)
    sizes = np.fromiter(map(len, encoded), dtype=np.int32, count=len(encoded))
    tokens = np.fromiter(chain.from_iterable(encoded), dtype=dtype, count=int(sizes.sum()))
    return tokens, sizes


def _init_worker(tokenizer_path: str) -> None:
    global _worker_tokenizer
    from ..tokenizer import AutoTokenizer

    _worker_tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)


def _encode_in_worker(args) -> tuple[np.ndarray, np.ndarray] | DataFormatError:
    try:
        return _encode_chunk(_worker_tokenizer, *args)
    except DataFormatError as exc:  # returned, so the parent raises it in input order
        return exc


def _chunks(path: Path, size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for lineno, line in iter_lines(path, "input file"):
        if not line.strip():
            continue
        chunk.append((lineno, line))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def preprocess(input_path: str | os.PathLike, output_prefix: str | os.PathLike,
               tokenizer_path: str | os.PathLike, *, json_key: str = "text",
               append_eos: bool = False, workers: int = 1,
               chunk_lines: int = CHUNK_LINES) -> dict[str, Any]:
    """Tokenize ``input_path`` into ``<output_prefix>.bin/.idx``; returns the counts.

    Documents that tokenize to nothing are skipped (counted in ``skipped``).
    """
    from ..tokenizer import AutoTokenizer
    from .indexed import IndexedDatasetBuilder, best_dtype, data_path, index_path

    path = Path(input_path)
    if not path.is_file():
        raise DataFormatError(f"input file not found: {path}")
    key = json_key if path.suffix.lower() in (".jsonl", ".json") else None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    eos = tokenizer.eos_token_id if append_eos else None
    if append_eos and eos is None:
        raise DataFormatError(f"--append_eos: the tokenizer at {tokenizer_path} has no EOS token")
    dtype = best_dtype(len(tokenizer))
    dtype_name = np.dtype(dtype).name
    stats = {"documents": 0, "tokens": 0, "skipped": 0, "dtype": str(dtype.__name__),
             "bin": str(data_path(output_prefix)), "idx": str(index_path(output_prefix))}

    def results() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        chunks = _chunks(path, chunk_lines)
        if workers <= 1:
            for chunk in chunks:
                yield _encode_chunk(tokenizer, path, chunk, key, eos, dtype_name)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork is cheap and works from any __main__; never fork a process holding Paddle
        method = "fork" if os.name == "posix" and "paddle" not in sys.modules else "spawn"
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(method),
                                 initializer=_init_worker,
                                 initargs=(os.fspath(tokenizer_path),)) as pool:
            pending: deque = deque()
            for chunk in chunks:
                pending.append(pool.submit(_encode_in_worker, (path, chunk, key, eos, dtype_name)))
                if len(pending) >= 2 * workers:  # bounded window keeps memory flat
                    yield _unwrap(pending.popleft().result())
            while pending:  # a worker that dies raises BrokenProcessPool, never hangs
                yield _unwrap(pending.popleft().result())

    with IndexedDatasetBuilder(output_prefix, dtype) as builder:
        for tokens, sizes in results():
            stats["skipped"] += int((sizes == 0).sum())
            builder.add_documents(tokens, sizes[sizes > 0])
        stats["documents"], stats["tokens"] = builder.num_documents, builder.num_tokens
    if stats["documents"] == 0:
        for p in (data_path(output_prefix), index_path(output_prefix)):
            p.unlink(missing_ok=True)
        raise DataFormatError(f"{path}: no documents")
    return stats


def _unwrap(result):
    if isinstance(result, Exception):
        raise result
    return result
