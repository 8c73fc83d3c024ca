"""Write config/<family>/<job>_argument.json: PaddleNLP-style argument files for every family.

Each file uses the keys of PaddleNLP's ``llm/config/<family>/*_argument.json`` (read by
``llm run FILE`` / ``llm quantize FILE`` through :mod:`paddlellm.plugin.paddlenlp_args`), sized for
the demo: no ``model_name_or_path`` (the family's demo model is used, see `llm run --help`)
and no ``dataset_name_or_path`` (the generated demo tasks are used). Point
``model_name_or_path`` at your checkpoint and ``dataset_name_or_path`` at a folder holding
``train.json`` / ``dev.json`` to train on your own.

    python scripts/make_paddlenlp_configs.py          # rewrite config/
    python scripts/make_paddlenlp_configs.py --check  # exit 1 if config/ is out of date
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: config folder name (PaddleNLP's) -> our --model name
FAMILIES = {"llama": "llama", "qwen": "qwen", "mistral": "mistral", "mixtral": "mixtral",
            "gemma": "gemma", "gpt-3": "gpt", "opt": "opt", "bloom": "bloom",
            "chatglm2": "chatglm2", "baichuan": "baichuan"}

TRAIN = {
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "per_device_eval_batch_size": 8,
    "eval_accumulation_steps": 16,
    "num_train_epochs": 1,
    "warmup_steps": 3,
    "logging_steps": 10,
    "evaluation_strategy": "epoch",
    "save_strategy": "epoch",
    "bf16": False,
    "fp16_opt_level": "O2",
    "do_train": True,
    "do_eval": True,
    "disable_tqdm": True,
    "recompute": False,
    "save_total_limit": 1,
    "tensor_parallel_degree": 1,
    "pipeline_parallel_degree": 1,
    "unified_checkpoint": True,
    "use_flash_attention": False,
}


def files(family: str, model: str) -> dict[str, dict]:
    out = f"./checkpoints/{family}"
    return {
        "pretrain": {"model": model, "output_dir": f"{out}/pretrain_ckpts",
                     **TRAIN, "max_seq_length": 128, "learning_rate": 3e-3,
                     "min_learning_rate": 3e-4, "max_steps": 200, "save_steps": 100,
                     "eval_steps": 100, "weight_decay": 0.01, "max_grad_norm": 1.0,
                     "continue_training": 0, "use_fused_rms_norm": False,
                     "sharding": "stage2", "dataloader_num_workers": 1},
        "sft": {"model": model, "output_dir": f"{out}/sft_ckpts", **TRAIN,
                "learning_rate": 1e-3, "max_steps": 60, "src_length": 64, "max_length": 128,
                "sharding": "stage2", "zero_padding": False},
        "lora": {"model": model, "output_dir": f"{out}/lora_ckpts", **TRAIN,
                 "learning_rate": 3e-3, "max_steps": 60, "src_length": 64, "max_length": 128,
                 "lora": True, "lora_rank": 8, "zero_padding": False, "pissa": False},
        "pt": {"model": model, "output_dir": f"{out}/pt_ckpts", **TRAIN,
               "learning_rate": 3e-2, "max_steps": 60, "src_length": 64, "max_length": 128,
               "prefix_tuning": True, "num_prefix_tokens": 8},
        "dpo": {"model": model, "output_dir": f"{out}/dpo_ckpts", **TRAIN,
                "max_steps": 30, "learning_rate": 1e-4, "max_seq_len": 128,
                "max_prompt_len": 64, "sharding": "stage1", "flash_mask": False,
                "beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0},
        "kto": {"model": model, "output_dir": f"{out}/kto_ckpts", **TRAIN,
                "max_steps": 30, "learning_rate": 1e-4, "max_seq_len": 128,
                "max_prompt_len": 64, "sharding": "stage1", "beta": 0.1, "seed": 42},
        "ptq": {"output_dir": f"{out}/ptq_ckpts", "per_device_train_batch_size": 8,
                "per_device_eval_batch_size": 8, "src_length": 64, "max_length": 128,
                "do_eval": True, "eval_with_do_generation": False, "do_ptq": True,
                "ptq_step": 4, "unified_checkpoint": True, "smooth": True, "smooth_step": 4,
                "smooth_all_linears": True},
        "gptq": {"output_dir": f"{out}/gptq_ckpts", "per_device_train_batch_size": 8,
                 "per_device_eval_batch_size": 8, "src_length": 64, "max_length": 128,
                 "do_eval": True, "eval_with_do_generation": False, "do_gptq": True,
                 "gptq_step": 4, "unified_checkpoint": True},
    }


def render() -> dict[Path, str]:
    out = {}
    for family, model in FAMILIES.items():
        for job, body in files(family, model).items():
            if job in ("ptq", "gptq") and family != "qwen":
                body = {"model_name_or_path": f"./checkpoints/{family}/sft_ckpts", **body}
            out[ROOT / "config" / family / f"{job}_argument.json"] = json.dumps(body, indent=4) + "\n"
    return out


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in render().items():
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print("out of date (run python scripts/make_paddlenlp_configs.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
