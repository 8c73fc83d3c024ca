"""Pretraining data: the Megatron / PaddleNLP memory-mapped indexed dataset and a GPT sampler.

Format (what PaddleNLP's ``llm/tools/preprocess/create_pretraining_data.py`` writes and its
``paddlenlp.data.indexed_dataset.MMapIndexedDataset`` reads, inherited from Megatron-LM):

``<prefix>.bin``
    every sequence's token ids back to back, in one dtype (``uint16`` when the vocabulary has
    fewer than 65500 ids, else ``int32``), no header.
``<prefix>.idx`` (little endian)
    ======  ======================  ===========================================
    offset  field                   type
    ======  ======================  ===========================================
    0       magic ``MMIDIDX\\0\\0``   9 bytes
    9       version (1)             uint64
    17      dtype code (table)      uint8  (8 = uint16, 4 = int32, ...)
    18      number of sequences N   uint64
    26      length of doc_idx D     uint64 (documents + 1)
    34      sizes                   N x int32 (tokens per sequence)
    ...     pointers                N x int64 (byte offset of each sequence in .bin)
    ...     doc_idx                 D x int64 (first sequence of each document, then N)
    ======  ======================  ===========================================

A document may hold several sequences (sentences); ``llm preprocess`` writes one sequence per
document, so ``doc_idx == arange(N + 1)``. As in PaddleNLP's GPT dataset, the train/valid/test
split and the sampler work on *sequences* (``sizes``).

:class:`PretrainingDataset` reproduces Megatron's ``_build_index_mappings``: per epoch the
split's documents are shuffled (``doc_idx``), the shuffled token stream is cut into samples of
``seq_length + 1`` tokens that overlap by one token (``sample_idx``, so every token is a target
exactly once per epoch) and the samples are shuffled (``shuffle_idx``), with Megatron's
separate shuffle for a last partial epoch below 80 %. Building is pure NumPy:
``O(E * S)`` for the document shuffles and ``O(M log(E * S))`` for the sample boundaries
(``searchsorted`` over cumulative lengths; ``E`` epochs, ``S`` split sequences, ``M``
samples) — no C++ helper needed. The three arrays are cached as ``.npy`` files and later
memory-mapped, and samples are read from the ``.bin`` memmap, so the corpus is never loaded.
For the same seed the arrays equal PaddleNLP's (``tests/fixtures/indexed``, recorded from its
code), so a run sees the samples in the same order.
"""
from __future__ import annotations

import hashlib
import os
import struct
from array import array
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import DataFormatError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
#: PaddleNLP / Megatron dtype codes
DTYPE_CODES: dict[int, type] = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                                6: np.float64, 7: np.float32, 8: np.uint16, 9: np.uint32,
                                10: np.uint64}
_CODE_OF = {np.dtype(t): c for c, t in DTYPE_CODES.items()}
HEADER_SIZE = len(MAGIC) + 8 + 1 + 8 + 8  # 34 bytes


def best_dtype(vocab_size: int) -> type:
    """``uint16`` when every id fits (vocabulary < 65500, PaddleNLP's rule), else ``int32``."""
    return np.uint16 if vocab_size < 65500 else np.int32


def data_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.bin")


def index_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.idx")


def exists(prefix: str | os.PathLike) -> bool:
    return data_path(prefix).is_file() and index_path(prefix).is_file()


# --- writing --------------------------------------------------------------------------------

class IndexedDatasetBuilder:
    """Stream sequences into ``<prefix>.bin``; ``finalize()`` writes ``<prefix>.idx``.

    Token ids go straight to disk; only the sizes and the document index (12 bytes a
    document) stay in memory. Use as a context manager, or call ``finalize()``.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: type = np.uint16):
        self.prefix = os.fspath(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_OF:
            raise ValueError(f"unsupported dtype {self.dtype}")
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._bin = open(data_path(self.prefix), "wb")
        self._sizes = array("i")  # int32 per sequence
        self._doc_idx = array("q", [0])  # int64, first sequence of each document
        self.num_tokens = 0
        self._finalized = False

    def add_item(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Append one sequence (a sentence, or a whole document)."""
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise ValueError(f"a sequence must be 1-D, got shape {arr.shape}")
        self._check_range(arr)
        self._bin.write(arr.astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.append(int(arr.size))
        self.num_tokens += int(arr.size)

    def _check_range(self, arr: np.ndarray) -> None:
        info = np.iinfo(self.dtype)
        if arr.dtype != self.dtype and arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"token ids outside the range of {self.dtype}")

    def end_document(self) -> None:
        self._doc_idx.append(len(self._sizes))

    def add_document(self, tokens: Sequence[int] | np.ndarray) -> None:
        """One sequence that is a whole document."""
        self.add_item(tokens)
        self.end_document()

    def add_documents(self, tokens: np.ndarray, sizes: np.ndarray) -> None:
        """Many one-sequence documents at once: ``tokens`` back to back, ``sizes`` each."""
        sizes = np.asarray(sizes, dtype=np.int32)
        tokens = np.asarray(tokens)
        if int(sizes.sum(dtype=np.int64)) != tokens.size:
            raise ValueError(f"sizes add up to {int(sizes.sum())}, not {tokens.size} tokens")
        self._check_range(tokens)
        self._bin.write(tokens.astype(self.dtype, copy=False).tobytes(order="C"))
        first = len(self._sizes)
        self._sizes.frombytes(sizes.tobytes())
        ends = np.arange(first + 1, first + 1 + len(sizes), dtype=np.int64)
        self._doc_idx.frombytes(ends.tobytes())
        self.num_tokens += tokens.size

    @property
    def num_documents(self) -> int:
        return len(self._doc_idx) - 1

    def finalize(self) -> None:
        if self._finalized:
            return
        self._bin.close()
        sizes = np.frombuffer(self._sizes, dtype=np.int32) if len(self._sizes) else \
            np.zeros(0, np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)  # byte offsets into .bin
        if len(sizes) > 1:
            np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.frombuffer(self._doc_idx, dtype=np.int64)
        with open(index_path(self.prefix), "wb") as fh:
            fh.write(MAGIC)
            fh.write(struct.pack("<Q", VERSION))
            fh.write(struct.pack("<B", _CODE_OF[self.dtype]))
            fh.write(struct.pack("<Q", len(sizes)))
            fh.write(struct.pack("<Q", len(doc_idx)))
            fh.write(sizes.astype("<i4").tobytes())
            fh.write(pointers.astype("<i8").tobytes())
            fh.write(doc_idx.astype("<i8").tobytes())
        self._finalized = True

    def __enter__(self) -> "IndexedDatasetBuilder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:  # leave no half-written dataset behind
            self._bin.close()
            data_path(self.prefix).unlink(missing_ok=True)
            index_path(self.prefix).unlink(missing_ok=True)


def write_indexed_dataset(prefix: str | os.PathLike, documents: Iterable[Sequence[int]],
                          dtype: type = np.uint16) -> None:
    """Write ``documents`` (one sequence each) as ``<prefix>.bin`` / ``<prefix>.idx``."""
    with IndexedDatasetBuilder(prefix, dtype) as builder:
        for doc in documents:
            builder.add_document(doc)


# --- reading --------------------------------------------------------------------------------

def read_index_header(path: str | os.PathLike) -> tuple[np.dtype, int, int]:
    """``(dtype, number of sequences, length of doc_idx)`` from an ``.idx`` file."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE or head[:len(MAGIC)] != MAGIC:
        raise DataFormatError(f"{path}: not an mmap indexed dataset index (bad magic; expected "
                              f"{MAGIC!r}, as written by `llm preprocess` or PaddleNLP)")
    (version,) = struct.unpack_from("<Q", head, 9)
    if version != VERSION:
        raise DataFormatError(f"{path}: index version {version}, only {VERSION} is supported")
    (code,) = struct.unpack_from("<B", head, 17)
    if code not in DTYPE_CODES:
        raise DataFormatError(f"{path}: unknown dtype code {code}")
    n, d = struct.unpack_from("<QQ", head, 18)
    return np.dtype(DTYPE_CODES[code]), n, d


class MMapIndexedDataset:
    """Read ``<prefix>.bin`` / ``<prefix>.idx`` through memory maps; nothing is loaded.

    ``ds[i]`` is sequence ``i``; ``ds.get(i, offset, length)`` a part of it; ``sizes``,
    ``pointers`` and ``doc_idx`` are views into the mapped index.
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = os.fspath(prefix)
        if not exists(self.prefix):
            raise DataFormatError(f"indexed dataset not found: {self.prefix}.bin / .idx")
        idx = index_path(self.prefix)
        self.dtype, n, d = read_index_header(idx)
        expected = HEADER_SIZE + n * 4 + n * 8 + d * 8
        if idx.stat().st_size != expected:
            raise DataFormatError(f"{idx}: {idx.stat().st_size} bytes, the header promises "
                                  f"{expected} ({n} sequences, {d - 1} documents)")
        self._index = np.memmap(idx, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(self._index, dtype="<i4", count=n, offset=HEADER_SIZE)
        self.pointers = np.frombuffer(self._index, dtype="<i8", count=n,
                                      offset=HEADER_SIZE + 4 * n)
        self.doc_idx = np.frombuffer(self._index, dtype="<i8", count=d,
                                     offset=HEADER_SIZE + 12 * n)
        bin_size = data_path(self.prefix).stat().st_size
        total = int(self.sizes.sum(dtype=np.int64)) * self.dtype.itemsize
        if bin_size != total:
            raise DataFormatError(f"{data_path(self.prefix)}: {bin_size} bytes, the index "
                                  f"describes {total}")
        # an empty file cannot be mapped; a zero-length array stands in
        self.buffer = (np.memmap(data_path(self.prefix), mode="r", dtype=self.dtype)
                       if bin_size else np.zeros(0, self.dtype))

    def __getstate__(self) -> str:  # data-loader workers reopen the maps, never copy them
        return self.prefix

    def __setstate__(self, prefix: str) -> None:
        self.__init__(prefix)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``offset : offset + length`` of sequence ``i`` (a copy, native ints)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} out of range ({len(self)})")
        size = int(self.sizes[i])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"tokens [{offset}, {offset + length}) outside sequence {i} "
                             f"of {size} tokens")
        start = int(self.pointers[i]) // self.dtype.itemsize + offset
        return np.array(self.buffer[start:start + length])

    @property
    def num_documents(self) -> int:
        return len(self.doc_idx) - 1

    def document(self, j: int) -> list[np.ndarray]:
        """The sequences of document ``j``."""
        return [self.get(i) for i in range(int(self.doc_idx[j]), int(self.doc_idx[j + 1]))]


# --- splitting and sampling -----------------------------------------------------------------

SPLIT_NAMES = ("train", "valid", "test")


def parse_split(split: str) -> list[float]:
    """``"949,50,1"`` (or ``"98/2"``, ``"1"``) -> three weights, missing ones are 0."""
    sep = "," if "," in split else "/"
    try:
        weights = [float(s) for s in split.split(sep)]
    except ValueError:
        raise DataFormatError(f"split '{split}' is not like '949,50,1'") from None
    weights = (weights + [0.0, 0.0, 0.0])[:3]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DataFormatError(f"split '{split}': weights must be >= 0 with a positive sum")
    return weights


def split_boundaries(split: str, size: int) -> list[int]:
    """``[0, a, b, size]``: train is ``[0, a)``, valid ``[a, b)``, test ``[b, size)``.

    Megatron's rounding: each part gets ``round(weight * size)`` and the rounding error is
    taken off every boundary so that the last one is ``size``.
    """
    weights = parse_split(split)
    total = sum(weights)
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + int(round(w / total * float(size))))
    diff = bounds[-1] - size
    return [bounds[0]] + [b - diff for b in bounds[1:]]


def samples_per_epoch(tokens_per_epoch: int, seq_length: int) -> int:
    """Samples of ``seq_length + 1`` tokens (overlapping by one) in one pass."""
    return max(0, (tokens_per_epoch - 1) // seq_length)


def num_epochs_for(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """The fewest epochs whose tokens yield ``num_samples`` samples."""
    per = tokens_per_epoch
    if samples_per_epoch(per, seq_length) <= 0:
        raise DataFormatError(f"{tokens_per_epoch} tokens cannot fill one sample of "
                              f"{seq_length + 1}")
    # (E * per - 1) // seq_length >= num_samples  <=>  E >= (num_samples * seq_length + 1) / per
    return max(1, -(-(num_samples * seq_length + 1) // per))


def build_doc_idx(documents: np.ndarray, num_epochs: int, rng: np.random.RandomState,
                  separate_last_epoch: bool) -> np.ndarray:
    """``documents`` repeated ``num_epochs`` times and shuffled (the last epoch on its own)."""
    if not separate_last_epoch or num_epochs == 1:
        doc_idx = np.tile(np.asarray(documents, dtype=np.int32), num_epochs)
        rng.shuffle(doc_idx)
        return doc_idx
    first = build_doc_idx(documents, num_epochs - 1, rng, False)
    last = build_doc_idx(documents, 1, rng, False)
    return np.concatenate([first, last])


def build_sample_idx(sizes: np.ndarray, doc_idx: np.ndarray, seq_length: int,
                     num_samples: int) -> np.ndarray:
    """``(num_samples + 1, 2)`` rows of (position in ``doc_idx``, token offset).

    Sample ``i`` spans stream positions ``i * seq_length ... (i + 1) * seq_length``
    inclusive; row ``i`` is where it starts, row ``i + 1`` where its last token lies.
    """
    lengths = np.asarray(sizes, dtype=np.int64)[doc_idx]  # (E * S,)
    ends = np.cumsum(lengths)  # exclusive end of each entry in the stream
    positions = np.arange(num_samples + 1, dtype=np.int64) * seq_length
    if len(ends) == 0 or positions[-1] >= ends[-1]:
        raise ValueError("not enough tokens for the requested samples")
    which = np.searchsorted(ends, positions, side="right")  # first entry ending after pos
    starts = ends - lengths
    out = np.empty((num_samples + 1, 2), dtype=np.int64)
    out[:, 0] = which
    out[:, 1] = positions - starts[which]
    return out


def build_shuffle_idx(num_samples: int, total_size: int,
                      rng: np.random.RandomState) -> np.ndarray:
    """A permutation of ``[0, num_samples)`` followed by one of ``[num_samples, total_size)``."""
    dtype = np.uint32 if total_size < np.iinfo(np.uint32).max - 1 else np.int64
    first = np.arange(num_samples, dtype=dtype)
    rng.shuffle(first)
    if num_samples == total_size:
        return first
    last = np.arange(num_samples, total_size, dtype=dtype)
    rng.shuffle(last)
    return np.concatenate([first, last])


class PretrainingDataset:
    """GPT-style samples of ``seq_length + 1`` token ids from one split of an indexed dataset.

    ``num_samples=None`` means one epoch of the split. The index arrays are cached under
    ``cache_dir`` (default ``<data dir>/index-cache``) keyed by a hash of the prefix, the
    index file's size and mtime, split, which, seq_length, seed and num_samples; a later
    construction memory-maps them (``self.built`` tells whether this one built them).
    """

    def __init__(self, prefix: str | os.PathLike, seq_length: int, split: str = "949,50,1",
                 which: str = "train", seed: int = 1234, num_samples: int | None = None,
                 cache_dir: str | os.PathLike | None = None):
        if which not in SPLIT_NAMES:
            raise ValueError(f"which must be one of {SPLIT_NAMES}, got '{which}'")
        if seq_length < 1:
            raise ValueError(f"seq_length must be positive, got {seq_length}")
        self.prefix = os.path.abspath(os.fspath(prefix))
        self.seq_length, self.split, self.which, self.seed = seq_length, split, which, seed
        self._args = (prefix, seq_length, split, which, seed, num_samples, cache_dir)
        self.indexed = MMapIndexedDataset(self.prefix)
        bounds = split_boundaries(split, len(self.indexed))
        k = SPLIT_NAMES.index(which)
        self.documents = np.arange(bounds[k], bounds[k + 1], dtype=np.int64)
        if len(self.documents) == 0:
            raise DataFormatError(f"{self.prefix}: the {which} split of '{split}' has no "
                                  f"documents ({len(self.indexed)} in all)")
        self.tokens_per_epoch = int(self.indexed.sizes[self.documents].sum(dtype=np.int64))
        per_epoch = samples_per_epoch(self.tokens_per_epoch, seq_length)
        if per_epoch == 0:
            raise DataFormatError(f"{self.prefix}: the {which} split has {self.tokens_per_epoch}"
                                  f" tokens, fewer than one sample of {seq_length + 1}")
        self.num_samples = per_epoch if num_samples is None else int(num_samples)
        self.num_epochs = num_epochs_for(self.tokens_per_epoch, seq_length, self.num_samples)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else \
            Path(self.prefix).parent / "index-cache"
        self.description = self._describe()
        key = hashlib.md5(self.description.encode("utf-8")).hexdigest()
        paths = {name: self.cache_dir / f"{key}_{name}_idx.npy"
                 for name in ("doc", "sample", "shuffle")}
        self.cache_files = paths
        self.built = not all(p.is_file() for p in paths.values())
        if self.built:
            arrays = self._build()
            self._save(arrays, key)
        self.doc_idx = np.load(paths["doc"], mmap_mode="r")
        self.sample_idx = np.load(paths["sample"], mmap_mode="r")
        self.shuffle_idx = np.load(paths["shuffle"], mmap_mode="r")

    def _describe(self) -> str:
        st = index_path(self.prefix).stat()
        return (f"GPT dataset\nprefix {self.prefix}\nindex {st.st_size} {st.st_mtime_ns}\n"
                f"split {self.split}\nwhich {self.which}\nseq_length {self.seq_length}\n"
                f"seed {self.seed}\nnum_samples {self.num_samples}\n")

    def _build(self) -> dict[str, np.ndarray]:
        rng = np.random.RandomState(seed=self.seed)
        epochs, per = self.num_epochs, self.tokens_per_epoch
        separate_last = False
        if epochs > 1:  # a last epoch used below 80 % is shuffled apart (Megatron)
            before_last = ((epochs - 1) * per - 1) // self.seq_length
            last_samples = self.num_samples - before_last
            separate_last = last_samples < int(0.80 * samples_per_epoch(per, self.seq_length))
        doc_idx = build_doc_idx(self.documents, epochs, rng, separate_last)
        total = (epochs * per - 1) // self.seq_length
        sample_idx = build_sample_idx(self.indexed.sizes, doc_idx, self.seq_length, total)
        first = before_last if separate_last else total
        shuffle_idx = build_shuffle_idx(first, total, rng)
        return {"doc": doc_idx, "sample": sample_idx, "shuffle": shuffle_idx}

    def _save(self, arrays: dict[str, np.ndarray], key: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / f"{key}.dsc").write_text(self.description)
        for name, arr in arrays.items():  # write then rename: readers never see half a file
            tmp = self.cache_files[name].with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, self.cache_files[name])

    def __getstate__(self) -> tuple:  # pickles as its arguments; the cache is reused
        return self._args

    def __setstate__(self, args: tuple) -> None:
        self.__init__(*args)

    def __len__(self) -> int:
        """Samples available (at least ``num_samples``: whole epochs are indexed)."""
        return len(self.shuffle_idx)

    def __getitem__(self, i: int) -> np.ndarray:
        """``seq_length + 1`` token ids (int64) of shuffled sample ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range ({len(self)})")
        return self.sample(int(self.shuffle_idx[i]))

    def sample(self, j: int) -> np.ndarray:
        """Sample ``j`` in stream order (before the sample shuffle)."""
        (first, off_first), (last, off_last) = self.sample_idx[j], self.sample_idx[j + 1]
        first, off_first, last, off_last = int(first), int(off_first), int(last), int(off_last)
        get = self.indexed.get
        if first == last:
            parts = [get(int(self.doc_idx[first]), off_first, off_last - off_first + 1)]
        else:
            parts = [get(int(self.doc_idx[first]), off_first)]
            parts += [get(int(self.doc_idx[k])) for k in range(first + 1, last)]
            parts.append(get(int(self.doc_idx[last]), 0, off_last + 1))
        return np.concatenate(parts).astype(np.int64)


def resolve_prefix(path: str | os.PathLike) -> str | None:
    """The indexed-dataset prefix ``path`` names, or None when it names other data.

    Accepts ``PREFIX``, ``PREFIX.bin`` / ``PREFIX.idx``, or a directory holding exactly one
    ``.bin``/``.idx`` pair (more than one is an error listing them).
    """
    text = os.fspath(path)
    for suffix in (".bin", ".idx"):
        if text.endswith(suffix) and exists(text[:-len(suffix)]):
            return text[:-len(suffix)]
    if exists(text):
        return text
    p = Path(text)
    if p.is_dir():
        pairs = sorted(str(i.with_suffix("")) for i in p.glob("*.idx") if exists(i.with_suffix("")))
        if len(pairs) == 1:
            return pairs[0]
        if len(pairs) > 1:
            raise DataFormatError(f"{p} holds {len(pairs)} indexed datasets "
                                  f"({', '.join(Path(x).name for x in pairs)}); pass one prefix")
    return None

