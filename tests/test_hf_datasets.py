"""``--data`` from Hugging Face ``datasets`` sources: parquet files and folders, Hub dataset
ids read from the Hub cache (offline), and the column mapping onto the SFT and preference
formats (``--data_columns``, alpaca, ShareGPT, TRL layouts)."""
from __future__ import annotations

import json
import sys

import pytest

from helpers import run_cli
from paddlellm.plugin.config import build_run_config
from paddlellm.data.columns import normalise_record, parse_columns
from paddlellm.data.demo import demo_examples
from paddlellm.data.hf_datasets import is_datasets_source, split_source
from paddlellm.data.sft import read_sft_jsonl
from paddlellm.errors import ConfigError, DataFormatError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    """datasets' Arrow cache and the Hub cache in the test's folder; never the network."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _parquet(path, columns: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return str(path)


# --- column mapping --------------------------------------------------------------------------

def test_data_columns_parse_from_flags_and_files():
    config = build_run_config(overrides=["--data_columns", "prompt=question,response=answer"])
    assert config.data_columns == {"prompt": "question", "response": "answer"}
    assert parse_columns({"chosen": "good"}) == {"chosen": "good"}
    assert parse_columns(["prompt=q", "response=a"]) == {"prompt": "q", "response": "a"}
    with pytest.raises(ConfigError, match="unknown target 'answer'.*prompt, response"):
        build_run_config(overrides=["--data_columns", "answer=response"])
    with pytest.raises(ConfigError, match="'prompt' is not TARGET=COLUMN"):
        parse_columns("prompt")


@pytest.mark.parametrize("record, columns, expected", [
    ({"instruction": "Add", "input": "2 and 3", "output": "5"}, {},
     {"src": "Add\n\n2 and 3", "tgt": "5"}),
    ({"instruction": "Say hi", "input": "", "output": "hi", "system": "Be brief"}, {},
     {"system": "Be brief", "src": "Say hi", "tgt": "hi"}),
    ({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                        {"from": "gpt", "value": "a"}]}, {},
     {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a"}]}),
    ({"prompt": "p", "chosen": "good", "rejected": "bad"}, {},
     {"src": "p", "tgt": [], "response": ["good", "bad"], "sort": [1, 0]}),
    ({"prompt": [{"role": "user", "content": "p"}],
      "chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "good"}],
      "rejected": [{"role": "assistant", "content": "bad"}]}, {},
     {"src": ["p"], "tgt": [], "response": ["good", "bad"], "sort": [1, 0]}),
    ({"prompt": "p", "completion": "meh", "label": False}, {},
     {"src": "p", "tgt": [], "response": ["meh"], "sort": [0]}),
    ({"question": "q", "answer": "a", "id": 7}, {"prompt": "question", "response": "answer"},
     {"src": "q", "tgt": "a"}),
    ({"src": "q", "tgt": "a", "instruction": "ignored"}, {}, {"src": "q", "tgt": "a",
                                                              "instruction": "ignored"}),
])
def test_common_layouts_become_our_formats(record, columns, expected):
    assert normalise_record(record, columns, "x") == expected


def test_a_mapped_column_the_record_lacks_is_named():
    with pytest.raises(DataFormatError, match=r"rows\[3\]: --data_columns names column\(s\) "
                                              r"'answer'.*columns: q"):
        normalise_record({"q": "x"}, {"response": "answer"}, "rows[3]")


# --- sources ---------------------------------------------------------------------------------

def test_parquet_file_and_folder_with_splits(tmp_path):
    single = _parquet(tmp_path / "one.parquet", {"question": ["a?", "b?"], "answer": ["A", "B"]})
    folder = tmp_path / "folder"
    _parquet(folder / "data" / "train-00000-of-00001.parquet",
             {"instruction": ["t1", "t2", "t3"], "output": ["o1", "o2", "o3"]})
    _parquet(folder / "data" / "test-00000-of-00001.parquet",
             {"instruction": ["e1"], "output": ["x1"]})
    assert is_datasets_source(single) and is_datasets_source(str(folder))
    assert not is_datasets_source(str(tmp_path / "missing.jsonl"))
    assert split_source(f"{folder}:test") == (str(folder), "test")

    convs = read_sft_jsonl(single, {"prompt": "question", "response": "answer"})
    assert convs[1] == [{"role": "user", "content": "b?"}, {"role": "assistant", "content": "B"}]
    assert [c[0]["content"] for c in read_sft_jsonl(str(folder), {})] == ["t1", "t2", "t3"]
    assert read_sft_jsonl(f"{folder}:test", {})[0][1]["content"] == "x1"
    with pytest.raises(DataFormatError,
                       match=r"no split 'dev' \(splits: train, test\); pick one with .*folder:SPLIT"):
        read_sft_jsonl(f"{folder}:dev", {})
    with pytest.raises(DataFormatError, match=r"one.parquet\[train\]\[0\]: expected 'src' and "
                                              r"'tgt'.*--data_columns"):
        read_sft_jsonl(single, {})


def test_hub_dataset_id_is_read_from_the_hub_cache_offline(tmp_path):
    """A dataset in the Hub cache's layout (datasets--org--name/refs + snapshots) resolves
    like a model id; with HF_HUB_OFFLINE=1 nothing is downloaded."""
    repo = tmp_path / "hub" / "datasets--someorg--tiny-alpaca"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    _parquet(repo / "snapshots" / commit / "data" / "train-00000-of-00001.parquet",
             {"instruction": ["Reverse: a b"], "input": [""], "output": ["b a"]})
    assert is_datasets_source("someorg/tiny-alpaca")
    assert read_sft_jsonl("someorg/tiny-alpaca", {}) == [
        [{"role": "user", "content": "Reverse: a b"}, {"role": "assistant", "content": "b a"}]]
    with pytest.raises(DataFormatError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        read_sft_jsonl("someorg/not-cached", {})


def test_preference_records_from_parquet_in_trl_layout(tmp_path):
    align_data = pytest.importorskip("paddlellm_align.data")
    data = _parquet(tmp_path / "prefs.parquet", {"question": ["Sort: 3 1 2", "Sort: b a"],
                                                 "chosen": ["1 2 3", "a b"],
                                                 "rejected": ["3 1 2", "b a"]})
    records = align_data.read_preference_jsonl(data, False, {"prompt": "question"})
    assert [(r.messages[-1]["content"], r.chosen, r.rejected) for r in records] == [
        ("Sort: 3 1 2", "1 2 3", "3 1 2"), ("Sort: b a", "a b", "b a")]


def test_missing_datasets_library_names_the_pip_command(tmp_path, monkeypatch):
    data = _parquet(tmp_path / "x.parquet", {"src": ["q"], "tgt": ["a"]})
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match=r"pip install 'paddlellm\[datasets\]'"):
        read_sft_jsonl(data, {})


def test_a_datasets_release_that_runs_loading_scripts_is_refused(tmp_path, monkeypatch):
    """datasets < 4 executes a folder's loading script: a data folder must never run code."""
    import types

    data = _parquet(tmp_path / "x.parquet", {"src": ["q"], "tgt": ["a"]})
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(__version__="2.19.0"))
    with pytest.raises(ConfigError, match=r"datasets 2\.19\.0 can run .*datasets>=4"):
        read_sft_jsonl(data, {})


def test_sft_run_on_a_parquet_file_with_a_column_mapping(tmp_path):
    rows = demo_examples(40, split="train", seed=5)
    data = _parquet(tmp_path / "train.parquet", {"question": [r["src"] for r in rows],
                                                 "answer": [r["tgt"] for r in rows]})
    out = tmp_path / "out"
    run_cli("run", "--stage", "sft", "--data", data, "--data_columns",
            "prompt=question,response=answer", "--max_length", "96", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--output_dir", str(out), check=True,
            env={"HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")})
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo"] is False and summary["train_examples"] == 38  # 2 held out (5%)
    used = json.loads((out / "run_config.json").read_text())
    assert used["data_columns"] == {"prompt": "question", "response": "answer"}
