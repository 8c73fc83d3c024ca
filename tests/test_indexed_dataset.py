"""Pretraining data: the mmap indexed .bin/.idx format, the GPT sampler, ``llm preprocess``
and the ``pretrain`` stage on indexed data."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from paddlellm.data.indexed import (IndexedDatasetBuilder, MMapIndexedDataset,
                                    PretrainingDataset, build_sample_idx, resolve_prefix,
                                    split_boundaries, write_indexed_dataset)
from paddlellm.errors import DataFormatError


def random_docs(n: int, seed: int = 0, high: int = 500, max_len: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, rng.integers(1, max_len)).tolist() for _ in range(n)]


# --- format ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_write_read_round_trip(tmp_path, dtype):
    high = 65000 if dtype is np.uint16 else 150000
    docs = random_docs(50, high=high)
    write_indexed_dataset(tmp_path / "c", docs, dtype=dtype)
    ds = MMapIndexedDataset(tmp_path / "c")
    assert ds.dtype == np.dtype(dtype) and len(ds) == 50 and ds.num_documents == 50
    assert [ds[i].tolist() for i in range(len(ds))] == docs
    assert ds.sizes.tolist() == [len(d) for d in docs]
    assert ds.doc_idx.tolist() == list(range(51))
    assert ds[-1].tolist() == docs[-1]
    assert ds.get(3, offset=1, length=2).tolist() == docs[3][1:3]
    assert ds.get(3, offset=1).tolist() == docs[3][1:]
    with pytest.raises(IndexError, match="outside sequence 3"):
        ds.get(3, offset=0, length=len(docs[3]) + 1)
    with pytest.raises(IndexError, match="out of range"):
        ds[50]
    # memory: the tokens stay on disk, the reader holds memory maps only
    assert isinstance(ds.buffer, np.memmap) and isinstance(ds._index, np.memmap)
    assert str(ds.buffer.filename) == str((tmp_path / "c.bin").resolve())


def test_bulk_writes_and_range_checks(tmp_path):
    with IndexedDatasetBuilder(tmp_path / "c", np.uint16) as builder:
        builder.add_documents(np.array([1, 2, 3, 4], np.uint16), [3, 1])
        builder.add_document([5])
        with pytest.raises(ValueError, match="outside the range of uint16"):
            builder.add_document([70000])
        with pytest.raises(ValueError, match="sizes add up to 3, not 2 tokens"):
            builder.add_documents(np.array([1, 2]), [3])
    ds = MMapIndexedDataset(tmp_path / "c")
    assert [ds[i].tolist() for i in range(3)] == [[1, 2, 3], [4], [5]]
    assert ds.doc_idx.tolist() == [0, 1, 2, 3]


def spec_index_bytes(dtype_code: int, sizes: list[int], itemsize: int,
                     doc_idx: list[int]) -> bytes:
    """The .idx bytes built field by field from the documented layout (PaddleNLP/Megatron
    ``MMapIndexedDataset.Index.writer``): magic, <Q version, <B dtype code, <Q sequences,
    <Q doc_idx length, int32 sizes, int64 byte pointers, int64 doc_idx."""
    pointers, address = [], 0
    for size in sizes:
        pointers.append(address)
        address += size * itemsize
    return (b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", dtype_code)
            + struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(doc_idx))
            + struct.pack(f"<{len(sizes)}i", *sizes) + struct.pack(f"<{len(sizes)}q", *pointers)
            + struct.pack(f"<{len(doc_idx)}q", *doc_idx))


@pytest.mark.parametrize("dtype,code", [(np.uint16, 8), (np.int32, 4)])
def test_idx_bytes_follow_the_documented_layout(tmp_path, dtype, code):
    # a document of two sentences, then two one-sequence documents
    with IndexedDatasetBuilder(tmp_path / "c", dtype) as builder:
        builder.add_item([5, 6, 7])
        builder.add_item([8])
        builder.end_document()
        builder.add_document([9, 10])
        builder.add_document([300, 1, 2, 3])
    idx = (tmp_path / "c.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack_from("<QBQQ", idx, 9) == (1, code, 4, 4)
    itemsize = np.dtype(dtype).itemsize
    assert idx == spec_index_bytes(code, [3, 1, 2, 4], itemsize, [0, 2, 3, 4])
    tokens = [5, 6, 7, 8, 9, 10, 300, 1, 2, 3]
    fmt = "<%dH" if dtype is np.uint16 else "<%di"
    assert (tmp_path / "c.bin").read_bytes() == struct.pack(fmt % len(tokens), *tokens)
    ds = MMapIndexedDataset(tmp_path / "c")
    assert [s.tolist() for s in ds.document(0)] == [[5, 6, 7], [8]]
    assert ds.num_documents == 3 and ds.pointers.tolist() == [0, 3 * itemsize, 4 * itemsize,
                                                              6 * itemsize]


def test_reader_reads_a_file_built_from_the_spec(tmp_path):
    sizes, tokens = [2, 3], [11, 12, 13, 14, 15]
    (tmp_path / "x.idx").write_bytes(spec_index_bytes(4, sizes, 4, [0, 1, 2]))
    (tmp_path / "x.bin").write_bytes(struct.pack("<5i", *tokens))
    ds = MMapIndexedDataset(tmp_path / "x")
    assert ds.dtype == np.int32 and [ds[0].tolist(), ds[1].tolist()] == [[11, 12], [13, 14, 15]]


#: written by PaddleNLP's own code: scripts/fixtures/make_indexed_fixtures.py
FIXTURES = Path(__file__).parent / "fixtures" / "indexed"


def test_reads_and_rewrites_files_written_by_paddlenlp(tmp_path):
    theirs = MMapIndexedDataset(FIXTURES / "paddlenlp")
    assert theirs.dtype == np.uint16 and len(theirs) == 201 and theirs.num_documents == 200
    assert theirs.doc_idx[:6].tolist() == [0, 1, 2, 3, 5, 6]  # document 3: two sentences
    assert theirs[4].tolist() == [7, 8, 9]
    with IndexedDatasetBuilder(tmp_path / "ours", np.uint16) as builder:
        for j in range(theirs.num_documents):
            for sentence in theirs.document(j):
                builder.add_item(sentence)
            builder.end_document()
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (FIXTURES / f"paddlenlp{ext}").read_bytes()


@pytest.mark.parametrize("which,num_samples", [("train", 194), ("train", 700), ("valid", 33)])
def test_index_mappings_equal_paddlenlp(tmp_path, which, num_samples):
    """Same seed, split and sequence length: PaddleNLP's GPTDataset index arrays."""
    for ext in (".bin", ".idx"):
        (tmp_path / f"c{ext}").write_bytes((FIXTURES / f"paddlenlp{ext}").read_bytes())
    ref = np.load(FIXTURES / "paddlenlp_index.npz")
    assert split_boundaries("80,15,5", 201) == ref["bounds"].tolist()
    ds = PretrainingDataset(tmp_path / "c", 16, split="80,15,5", which=which, seed=1234,
                            num_samples=num_samples)
    tag = f"{which}_{num_samples}"
    np.testing.assert_array_equal(ds.doc_idx, ref[f"{tag}_doc_idx"])
    np.testing.assert_array_equal(ds.sample_idx, ref[f"{tag}_sample_idx"])
    np.testing.assert_array_equal(ds.shuffle_idx, ref[f"{tag}_shuffle_idx"])


def test_corrupt_files_are_clear_errors(tmp_path):
    write_indexed_dataset(tmp_path / "c", [[1, 2], [3]])
    idx = (tmp_path / "c.idx").read_bytes()
    (tmp_path / "c.idx").write_bytes(b"TNTIDX\x00\x00\x00" + idx[9:])
    with pytest.raises(DataFormatError, match="bad magic"):
        MMapIndexedDataset(tmp_path / "c")
    (tmp_path / "c.idx").write_bytes(idx[:-8])
    with pytest.raises(DataFormatError, match="the header promises"):
        MMapIndexedDataset(tmp_path / "c")
    (tmp_path / "c.idx").write_bytes(idx)
    (tmp_path / "c.bin").write_bytes(b"\x00" * 2)
    with pytest.raises(DataFormatError, match="the index describes 6"):
        MMapIndexedDataset(tmp_path / "c")
    with pytest.raises(DataFormatError, match="not found"):
        MMapIndexedDataset(tmp_path / "missing")


# --- splits ---------------------------------------------------------------------------------

@pytest.mark.parametrize("split,size,expected", [
    ("949,50,1", 1000, [0, 949, 999, 1000]),
    ("949,50,1", 100, [0, 95, 100, 100]),  # round(0.1) = 0 test documents
    ("98/2", 50, [0, 49, 50, 50]),
    ("1", 7, [0, 7, 7, 7]),
    ("1,1,1", 10, [0, 4, 7, 10]),  # Megatron shifts every boundary by the rounding error
    ("0,1,0", 5, [0, 0, 5, 5]),
])
def test_split_boundaries_follow_megatron(split, size, expected):
    assert split_boundaries(split, size) == expected


def test_bad_split_strings():
    with pytest.raises(DataFormatError, match="is not like '949,50,1'"):
        split_boundaries("a,b", 10)
    with pytest.raises(DataFormatError, match="positive sum"):
        split_boundaries("0,0,0", 10)


# --- sampler --------------------------------------------------------------------------------

def reference_sample_idx(sizes, doc_idx, seq_length, num_samples):
    """Megatron's ``build_sample_idx`` loop (helpers.cpp), written out as the reference."""
    out = [(0, 0)]
    pos, offset = 0, 0
    for _ in range(num_samples):
        remaining = seq_length + 1
        while remaining != 0:
            length = sizes[doc_idx[pos]] - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                pos += 1
                offset = 0
        out.append((pos, offset))
    return np.array(out)


@pytest.mark.parametrize("seq_length", [1, 7, 64])
def test_sample_idx_matches_the_reference_loop(seq_length):
    rng = np.random.default_rng(seq_length)
    sizes = rng.integers(1, 50, 300).astype(np.int32)
    doc_idx = rng.permutation(np.tile(np.arange(300), 3)).astype(np.int32)
    num_samples = (int(sizes[doc_idx].sum()) - 1) // seq_length
    ours = build_sample_idx(sizes, doc_idx, seq_length, num_samples)
    np.testing.assert_array_equal(ours, reference_sample_idx(sizes, doc_idx, seq_length,
                                                             num_samples))


@pytest.fixture
def corpus(tmp_path):
    docs = random_docs(200, seed=3)
    write_indexed_dataset(tmp_path / "data" / "c", docs)
    return tmp_path / "data" / "c", docs


def test_sampler_covers_the_train_split_once_per_epoch(corpus):
    prefix, docs = corpus
    seq = 16
    ds = PretrainingDataset(prefix, seq, split="949,50,1", which="train", seed=7)
    train_docs = set(range(190))  # split_boundaries("949,50,1", 200) == [0, 190, 200, 200]
    assert ds.num_epochs == 1 and sorted(ds.doc_idx.tolist()) == sorted(train_docs)
    assert ds.doc_idx.tolist() != sorted(train_docs)  # documents are shuffled
    stream = np.concatenate([docs[d] for d in ds.doc_idx])  # the epoch's token stream
    assert len(stream) == ds.tokens_per_epoch == sum(len(docs[d]) for d in train_docs)
    samples = [ds.sample(j) for j in range(len(ds))]  # stream order, before the shuffle
    assert all(len(s) == seq + 1 and s.dtype == np.int64 for s in samples)
    assert len(ds) == (len(stream) - 1) // seq
    # consecutive samples share one token; the targets (sample[1:]) are the stream in order
    assert all(a[-1] == b[0] for a, b in zip(samples, samples[1:]))
    targets = np.concatenate([s[1:] for s in samples])
    np.testing.assert_array_equal(targets, stream[1:len(targets) + 1])
    assert len(stream) - 1 - len(targets) < seq  # only a partial sample is left over
    # __getitem__ serves the same samples in the shuffled order
    assert sorted(ds.shuffle_idx.tolist()) == list(range(len(ds)))
    np.testing.assert_array_equal(ds[5], samples[int(ds.shuffle_idx[5])])


def test_valid_and_test_splits_hold_their_documents(corpus):
    prefix, _ = corpus
    valid = PretrainingDataset(prefix, 8, split="80,15,5", which="valid", seed=1)
    test = PretrainingDataset(prefix, 8, split="80,15,5", which="test", seed=1)
    assert sorted(valid.doc_idx.tolist()) == list(range(160, 190))
    assert sorted(test.doc_idx.tolist()) == list(range(190, 200))
    with pytest.raises(DataFormatError, match="the test split of '949,50,1' has no documents"):
        PretrainingDataset(prefix, 8, split="949,50,1", which="test")


@pytest.mark.parametrize("fraction,separate", [(2.3, True), (2.9, False)])
def test_several_epochs_and_the_separate_last_epoch(corpus, fraction, separate):
    prefix, _ = corpus
    one = PretrainingDataset(prefix, 16, seed=2)
    wanted = int(fraction * len(one))
    ds = PretrainingDataset(prefix, 16, seed=2, num_samples=wanted)
    assert ds.num_epochs == 3 and len(ds) >= wanted
    # every document three times; a last epoch used below 80 % is shuffled on its own
    assert np.bincount(ds.doc_idx, minlength=190).tolist() == [3] * 190
    last_epoch = sorted(ds.doc_idx[-190:].tolist())
    assert (last_epoch == list(range(190))) == separate
    before_last = (2 * ds.tokens_per_epoch - 1) // 16
    head = sorted(ds.shuffle_idx[:before_last].tolist())  # its samples come last as well
    assert (head == list(range(before_last))) == separate
    assert sorted(ds.shuffle_idx.tolist()) == list(range(len(ds)))


def megatron_order(documents, sizes, seq_length, num_samples, seed):
    """doc_idx and shuffle_idx the way Megatron / PaddleNLP's ``_build_index_mappings`` draws
    them (``np.mgrid`` per epoch, one ``RandomState``), written out as the reference."""
    rng = np.random.RandomState(seed=seed)
    per = int(sizes[documents].sum())
    epochs, total = 0, 0
    while True:
        epochs, total = epochs + 1, total + per
        if (total - 1) // seq_length >= num_samples:
            break
    separate = False
    if epochs > 1:
        before_last = ((epochs - 1) * per - 1) // seq_length
        separate = num_samples - before_last < int(0.80 * ((per - 1) // seq_length))

    def doc_idx_for(n):
        grid = np.mgrid[0:n, 0:len(documents)][1]
        grid[:] = documents
        grid = grid.reshape(-1).astype(np.int32)
        rng.shuffle(grid)
        return grid

    doc_idx = (np.concatenate([doc_idx_for(epochs - 1), doc_idx_for(1)]) if separate
               else doc_idx_for(epochs))
    total_samples = (epochs * per - 1) // seq_length
    first_n = before_last if separate else total_samples
    first = np.arange(first_n, dtype=np.uint32)
    rng.shuffle(first)
    if first_n == total_samples:
        return doc_idx, first
    last = np.arange(first_n, total_samples, dtype=np.uint32)
    rng.shuffle(last)
    return doc_idx, np.concatenate([first, last])


@pytest.mark.parametrize("num_samples", [None, 700, 900])
def test_same_order_as_megatron_for_the_same_seed(corpus, num_samples):
    prefix, docs = corpus
    ds = PretrainingDataset(prefix, 16, seed=11, num_samples=num_samples)
    sizes = np.array([len(d) for d in docs])
    doc_idx, shuffle_idx = megatron_order(np.arange(190), sizes, 16, ds.num_samples, 11)
    np.testing.assert_array_equal(ds.doc_idx, doc_idx)
    np.testing.assert_array_equal(ds.shuffle_idx, shuffle_idx)
    assert ds.shuffle_idx.dtype == np.uint32


def test_index_cache_is_built_once_then_memory_mapped(corpus, tmp_path):
    prefix, _ = corpus
    first = PretrainingDataset(prefix, 16, seed=5, num_samples=100)
    assert first.built and first.cache_dir == prefix.parent / "index-cache"
    files = list(first.cache_files.values())
    assert all(f.is_file() for f in files)
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = PretrainingDataset(prefix, 16, seed=5, num_samples=100)
    assert not second.built and [f.stat().st_mtime_ns for f in files] == mtimes
    for arr in (second.doc_idx, second.sample_idx, second.shuffle_idx):
        assert isinstance(arr, np.memmap)
    assert all(np.array_equal(first[i], second[i]) for i in range(len(first)))
    assert PretrainingDataset(prefix, 16, seed=6, num_samples=100).built  # other key
    elsewhere = PretrainingDataset(prefix, 16, seed=5, num_samples=100,
                                   cache_dir=tmp_path / "cache")
    assert elsewhere.built and (tmp_path / "cache").is_dir()
    # rewriting the data invalidates the cache
    write_indexed_dataset(prefix, random_docs(200, seed=4))
    os.utime(f"{prefix}.idx", ns=(mtimes[0] + 10**9, mtimes[0] + 10**9))
    assert PretrainingDataset(prefix, 16, seed=5, num_samples=100).built


def test_pickling_reopens_the_memory_maps(corpus):
    import pickle

    prefix, _ = corpus
    ds = PretrainingDataset(prefix, 16, seed=5)
    blob = pickle.dumps(ds)
    assert len(blob) < 1000  # arguments only, no arrays (data-loader workers reopen)
    again = pickle.loads(blob)
    assert not again.built and isinstance(again.indexed.buffer, np.memmap)
    np.testing.assert_array_equal(again[3], ds[3])
    reader = pickle.loads(pickle.dumps(ds.indexed))
    assert isinstance(reader.buffer, np.memmap) and reader[7].tolist() == ds.indexed[7].tolist()


def test_resolve_prefix(tmp_path):
    write_indexed_dataset(tmp_path / "one" / "c", [[1, 2, 3]])
    prefix = str(tmp_path / "one" / "c")
    assert resolve_prefix(prefix) == prefix
    assert resolve_prefix(prefix + ".bin") == prefix == resolve_prefix(prefix + ".idx")
    assert resolve_prefix(tmp_path / "one") == prefix
    write_indexed_dataset(tmp_path / "one" / "d", [[4]])
    with pytest.raises(DataFormatError, match="holds 2 indexed datasets"):
        resolve_prefix(tmp_path / "one")
    (tmp_path / "t.jsonl").write_text('{"text": "x"}\n')
    assert resolve_prefix(tmp_path / "t.jsonl") is None


# --- llm preprocess and the pretrain stage --------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A byte-level BPE trained on demo lines and a jsonl corpus of them."""
    from paddlellm.data.demo import iter_demo_corpus
    from paddlellm.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("demo")
    texts = list(iter_demo_corpus(400, split="train", seed=0))
    tokenizer = train_bpe_tokenizer(texts, 320, root / "tok")
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for text in texts:
            fh.write(json.dumps({"text": text}) + "\n")
    return root, texts, tokenizer


def test_preprocess_cli_then_pretrain_on_the_indexed_data(demo, tmp_path):
    root, texts, tokenizer = demo
    prefix = tmp_path / "data" / "corpus"
    proc = run_cli("preprocess", "--input_path", str(root / "corpus.jsonl"), "--output_prefix",
                   str(prefix), "--model_name_or_path", str(root / "tok"), "--append_eos",
                   check=True)
    expected = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id]
                for t in texts]
    n_tokens = sum(map(len, expected))
    assert f"wrote {len(texts)} documents, {n_tokens} tokens (uint16)" in proc.stdout
    ds = MMapIndexedDataset(prefix)
    assert [ds[i].tolist() for i in range(len(ds))] == expected

    out = tmp_path / "out"
    run_cli("run", "--stage", "pretrain", "--data", str(prefix), "--tokenizer_name_or_path",
            str(root / "tok"), "--max_steps", "12", "--max_length", "32", "--learning_rate",
            "3e-3", "--output_dir", str(out), check=True)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo"] is False and summary["steps"] == 12
    assert summary["tokens"] == 12 * 8 * 31  # samples of 32 tokens, 31 targets each
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    valid_tokens = sum(len(e) for e in expected[380:])  # split [0, 380, 400, 400]
    eval_tokens = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert eval_tokens[0]["eval_tokens"] == (valid_tokens - 1) // 31 * 31
    assert len(list((tmp_path / "data" / "index-cache").glob("*_shuffle_idx.npy"))) == 2
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()


def test_pretrain_with_a_separate_indexed_eval_set(demo, tmp_path):
    from paddlellm.data.preprocess import preprocess

    root, texts, tokenizer = demo
    preprocess(root / "corpus.jsonl", tmp_path / "train", root / "tok", append_eos=True)
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                 for t in texts[:40]))
    stats = preprocess(tmp_path / "eval.jsonl", tmp_path / "ev" / "eval", root / "tok",
                       append_eos=True)
    out = tmp_path / "out"
    common = ["--stage", "pretrain", "--data", str(tmp_path / "train.bin"),
              "--tokenizer_name_or_path", str(root / "tok"), "--max_steps", "2",
              "--max_length", "16", "--split", "1,0,0", "--output_dir", str(out)]
    run_cli("run", *common, "--eval_data", str(tmp_path / "ev"), check=True)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["eval_tokens"] == (stats["tokens"] - 1) // 15 * 15  # all of the eval set
    proc = run_cli("run", *common)
    assert proc.returncode == 2 and "the valid split of '1,0,0' has no documents" in proc.stderr


def test_preprocess_workers_text_input_and_json_key(demo, tmp_path):
    from paddlellm.data.preprocess import preprocess

    root, texts, tokenizer = demo
    one = preprocess(root / "corpus.jsonl", tmp_path / "one", root / "tok", chunk_lines=50)
    two = preprocess(root / "corpus.jsonl", tmp_path / "two", root / "tok", workers=2,
                     chunk_lines=50)
    assert one["documents"] == two["documents"] == len(texts)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"one{ext}").read_bytes() == (tmp_path / f"two{ext}").read_bytes()
    (tmp_path / "c.txt").write_text("hello world\n\n  \nWhat is 1 + 2? 3\n", encoding="utf-8")
    stats = preprocess(tmp_path / "c.txt", tmp_path / "t", root / "tok")
    ds = MMapIndexedDataset(tmp_path / "t")
    assert stats["documents"] == 2 and ds[1].tolist() == tokenizer.encode(
        "What is 1 + 2? 3", add_special_tokens=False)
    (tmp_path / "k.jsonl").write_text('{"content": "abc"}\n{"content": ""}\n')
    stats = preprocess(tmp_path / "k.jsonl", tmp_path / "k", root / "tok", json_key="content")
    assert stats["documents"] == 1 and stats["skipped"] == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_malformed_lines_name_file_and_line(demo, tmp_path, workers):
    root, _, _ = demo
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n\n{"text": "b"\n{"text": "c"}\n', encoding="utf-8")
    args = ["--output_prefix", str(tmp_path / "out"), "--model_name_or_path",
            str(root / "tok"), "--workers", workers]
    proc = run_cli("preprocess", "--input_path", str(bad), *args)
    assert proc.returncode == 2 and f"{bad}:3: not valid JSON" in proc.stderr
    assert not (tmp_path / "out.bin").exists() and not (tmp_path / "out.idx").exists()
    bad.write_text('{"text": "a"}\n{"txt": "b"}\n', encoding="utf-8")
    proc = run_cli("preprocess", "--input_path", str(bad), *args)
    assert proc.returncode == 2
    assert f"{bad}:2: expected an object with a string 'text' field" in proc.stderr


def test_indexed_run_without_a_tokenizer_is_a_clear_error(corpus):
    from paddlellm.plugin.config import RunConfig
    from paddlellm.data.pretraining import load_tokenizer

    prefix, _ = corpus
    with pytest.raises(DataFormatError, match="--tokenizer_name_or_path"):
        load_tokenizer(RunConfig(data=str(prefix)))
