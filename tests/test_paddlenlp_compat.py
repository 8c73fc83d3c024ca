"""PaddleNLP users' argument files, flags and dataset folders work as written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paddlellm.plugin.config import build_run_config
from paddlellm.errors import ConfigError
from paddlellm.plugin.paddlenlp_args import (job_of, mapping_table, resolve_data_folder, translate,
                                             translate_quantize)
from paddlellm.plugin.manager import get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "config").glob("*/*_argument.json"))

#: the keys of PaddleNLP's llm/config/qwen/lora_argument.json (values ours)
SEED_LORA = {
    "model_name_or_path": "Qwen/Qwen2-7B", "dataset_name_or_path": "./data",
    "output_dir": "./checkpoints/lora_ckpts", "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4, "per_device_eval_batch_size": 8,
    "eval_accumulation_steps": 16, "num_train_epochs": 3, "learning_rate": 3e-04,
    "warmup_steps": 30, "logging_steps": 1, "evaluation_strategy": "epoch",
    "save_strategy": "epoch", "src_length": 1024, "max_length": 2048, "bf16": True,
    "fp16_opt_level": "O2", "do_train": True, "do_eval": True, "disable_tqdm": True,
    "load_best_model_at_end": True, "eval_with_do_generation": False,
    "metric_for_best_model": "accuracy", "recompute": True, "save_total_limit": 1,
    "tensor_parallel_degree": 1, "pipeline_parallel_degree": 1, "lora": True,
    "unified_checkpoint": True, "zero_padding": False, "use_flash_attention": True,
    "pissa": False,
}


def test_seed_lora_file_maps_onto_our_keys():
    out, notes = translate(SEED_LORA, "lora_argument.json")
    assert out["peft"] == "lora" and out["data"] == "./data" and out["max_length"] == 2048
    assert out["pissa"] is False and out["recompute"] is True
    for gone in ("do_train", "unified_checkpoint", "tensor_parallel_degree", "lora",
                 "use_flash_attention", "dataset_name_or_path"):
        assert gone not in out
    assert any(n.startswith("use_flash_attention:") for n in notes)
    assert any(n.startswith("src_length:") for n in notes)


@pytest.mark.parametrize("name,raw,job", [
    ("dpo_argument.json", {"train_dataset_path": "t.jsonl"}, "dpo"),
    ("kto_lora_argument.json", {"train_dataset_path": "t.jsonl", "lora": True}, "kto"),
    ("pretrain_argument_0p5b.json", {"input_dir": "./data"}, "pretrain"),
    ("my.json", {"input_dir": "./data"}, "pretrain"),
    ("gptq_argument.json", {"do_gptq": True}, "quantize"),
    ("sft_argument.json", {"dataset_name_or_path": "./data"}, "sft"),
])
def test_job_from_file_name_and_keys(name, raw, job):
    assert job_of(raw, name) == job


def test_alignment_and_pretrain_jobs_select_stage():
    out, _ = translate({"train_dataset_path": "t.jsonl", "beta": 0.1}, "kto_argument.json")
    assert out["align"] == "kto" and out["data"] == "t.jsonl"
    out, _ = translate({"input_dir": "./d", "continue_training": 0}, "pretrain_argument.json")
    assert out["stage"] == "pretrain" and out["continue_training"] is False


def test_unhonourable_keys_are_named_together():
    with pytest.raises(ConfigError) as err:
        translate({**SEED_LORA, "tensor_parallel_degree": 4, "pipeline_parallel_degree": 2,
                   "prefix_tuning": True}, "lora_argument.json", world_size=1)
    msg = str(err.value)
    assert "lora_argument.json" in msg
    for key in ("tensor_parallel_degree", "pipeline_parallel_degree", "prefix"):
        assert key in msg


def test_parallel_degrees_map_to_strategies_with_several_processes():
    out, _ = translate({"tensor_parallel_degree": 2}, world_size=2)
    assert out == {"strategy": "tensor_parallel", "tensor_parallel_degree": 2}
    out, _ = translate({"sharding": "stage1 stage2"}, world_size=2)
    assert out == {"strategy": "sharding", "sharding_stage": 2}
    out, notes = translate({"sharding": "stage2"}, world_size=1)
    assert out == {} and "single process" in notes[0]


def test_mora_switch_and_lora_options_without_lora():
    out, _ = translate({"lora": True, "use_mora": True})
    assert out["peft"] == "mora"
    with pytest.raises(ConfigError, match="pissa"):
        translate({"pissa": True})
    out, _ = translate({"pissa": False, "lora_rank": 8, "prefix_tuning": True})
    assert out == {"peft": "prefix"}


def test_mora_and_reft_keys_map_onto_their_methods():
    out, _ = translate({"lora": True, "use_mora": True, "lora_rank": 16,
                        "target_modules": ".*q_proj"})
    assert out == {"peft": "mora", "mora_rank": 16, "target_modules": ".*q_proj"}
    out, notes = translate({"reft": True, "layers": "0;2", "position": "f3+l3", "rank": 4,
                            "dropout": 0.05, "intervention_type": "LoreftIntervention",
                            "act_fn": "linear", "add_bias": False})
    assert out == {"peft": "reft", "reft_layers": "0;2", "reft_positions": "f3+l3",
                   "reft_rank": 4, "reft_dropout": 0.05}
    assert any(n.startswith("add_bias: no effect") for n in notes)
    with pytest.raises(ConfigError, match="'act_fn': 'relu' is not implemented"):
        translate({"reft": True, "act_fn": "relu"})


def test_quantization_file_maps_onto_quantize_keys(tmp_path):
    (tmp_path / "quant.json").write_text('{"src": "a", "tgt": "b"}\n')
    (tmp_path / "dev.json").write_text('{"src": "a", "tgt": "b"}\n')
    raw = {"model_name_or_path": "m", "dataset_name_or_path": str(tmp_path), "output_dir": "o",
           "do_gptq": True, "gptq_step": 8, "per_device_train_batch_size": 8, "smooth": True}
    out, notes = translate_quantize(raw)
    assert out == {"model_name_or_path": "m", "output_dir": "o", "quant_type": "gptq",
                   "calibration_data": str(tmp_path / "quant.json"),
                   "eval_data": str(tmp_path / "dev.json"), "nsamples": 64}
    assert any(n.startswith("smooth:") for n in notes)
    out, _ = translate_quantize({"do_ptq": True, "quant_type": "a8w8c8", "output_dir": "o"})
    assert out["quant_type"] == "a8w8c8"
    with pytest.raises(ConfigError, match="quantize"):
        translate({"do_ptq": True}, "ptq_argument.json")


def test_dataset_folder_layout(tmp_path):
    (tmp_path / "train.json").write_text("")
    (tmp_path / "dev.json").write_text("")
    assert resolve_data_folder(str(tmp_path), None, "sft") == (str(tmp_path / "train.json"),
                                                               str(tmp_path / "dev.json"))
    assert resolve_data_folder(str(tmp_path), "x.json", "sft")[1] == "x.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="train.json"):
        resolve_data_folder(str(empty), None, "sft")


def test_shipped_configs_are_current_and_valid():
    assert subprocess.run([sys.executable, str(ROOT / "scripts" / "make_paddlenlp_configs.py"),
                           "--check"]).returncode == 0
    assert len(CONFIGS) >= 80
    registry = get_plugin_manager().registry
    for path in CONFIGS:
        raw = json.loads(path.read_text())
        if job_of(raw, path) == "quantize":
            translate_quantize(raw, path)
            continue
        config = build_run_config(path, [], registry=registry)
        assert config.output_dir.startswith("./checkpoints/"), path


def test_docs_list_every_mapping():
    doc = (ROOT / "docs" / "paddlenlp.md").read_text()
    assert mapping_table() in doc, "regenerate the table in docs/paddlenlp.md from mapping_table()"


def test_lora_config_with_dataset_folder_trains(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"src": f"Say {w}", "tgt": w} for w in ("eel", "owl", "cat", "dog", "ant", "bee")]
    (data / "train.json").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    (data / "dev.json").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    cfg = dict(SEED_LORA, model_name_or_path=None, dataset_name_or_path=str(data),
               output_dir=str(tmp_path / "out"), max_length=64, src_length=32, bf16=False,
               recompute=False, max_steps=2, logging_steps=1, warmup_steps=0,
               per_device_train_batch_size=4, gradient_accumulation_steps=1)
    del cfg["model_name_or_path"]
    path = tmp_path / "lora_argument.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "paddlellm", "run", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: use_flash_attention" in proc.stderr
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["peft"] == "lora" and summary["steps"] == 2 and summary["train_examples"] == 24
    assert (tmp_path / "out" / "adapter_config.json").is_file()


# --- the inference tutorial's predictor commands (on the bundled model: no network) ---------

def _predict(tmp_path, *flags):
    from tests.helpers import run_cli

    return run_cli("predict", "--output_file", str(tmp_path / "out.json"), "--max_length", "24",
                   *flags)


@pytest.mark.parametrize("flags", [
    ["--inference_model", "--dtype", "float16", "--block_attn"],
    ["--inference_model", "--dtype", "float16", "--quant_type", "weight_only_int8", "--block_attn"],
    ["--avx_model", "--avx_type", "bf16"],
])
def test_seed_predictor_commands_run(tmp_path, flags):
    proc = _predict(tmp_path, *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "example prompts" in proc.stderr and "What colour is the eel?" in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()]
    assert len(rows) == 3 and all("output" in r for r in rows)


@pytest.mark.parametrize("flags,message", [
    (["--mode", "static"], "no exported static-graph model"),
    (["--cachekv_int8_type", "dynamic"], "a8w8c8"),
    (["--cachekv_int8_type", "static"], "calibrated KV-cache scales"),
    (["--avx_model", "--avx_type", "fp4"], "valid values"),
])
def test_seed_predictor_flags_we_cannot_honour_say_why(tmp_path, flags, message):
    proc = _predict(tmp_path, *flags)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
