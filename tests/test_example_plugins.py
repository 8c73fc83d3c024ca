"""The third-party example plugins of ``examples/third-party-plugins`` (written from
docs/plugins.md, importing only ``paddlellm.api``) work end to end through ``llm run``: an
alignment loss, a PEFT method (IA3, saved in the peft format) and a quantizer."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from paddlellm.plugin.config import build_run_config
from paddlellm.plugin.manager import PluginManager, get_plugin_manager, reset_plugin_manager
from paddlellm.training.compose import run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "third-party-plugins"
COMMON = ("--max_steps", "4", "--per_device_train_batch_size", "8", "--logging_steps", "2",
          "--max_length", "128", "--save_steps", "1000")


@pytest.fixture(scope="module")
def manager():
    """The installed plugins plus the examples' entry-point module, registered in-process the
    way an installed distribution's entry point would be (strict: any contract error raises)."""
    sys.path.insert(0, str(EXAMPLES))
    import paddlellm_example_plugins.plugin as plugin

    previous = get_plugin_manager()
    manager = PluginManager(strict=True)
    if not manager.pm.has_plugin("example_plugins"):  # found already when pip left egg-info
        manager.register(plugin, "example_plugins", "paddlellm-example-plugins", "0.1.0")
    assert manager.check_targets() == []
    reset_plugin_manager(manager)
    yield manager
    reset_plugin_manager(previous)
    sys.path.remove(str(EXAMPLES))


def llm_run(manager, *args: str) -> dict:
    return run(build_run_config(None, list(args), registry=manager.registry), manager)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from paddlellm.api import demo_examples
    from paddlellm_align.demo import demo_preferences

    root = tmp_path_factory.mktemp("examples-data")
    tasks = ("count", "next", "fact")  # short answers: quick to train
    pairs = [r for r in demo_preferences(60, seed=7) if r["task"] in tasks][:8]
    (root / "pairs.jsonl").write_text("".join(
        json.dumps({k: r[k] for k in ("src", "tgt", "response", "sort")}) + "\n" for r in pairs))
    sft = demo_examples(16, tasks=tasks)
    (root / "sft.jsonl").write_text("".join(
        json.dumps({"src": r["src"], "tgt": r["tgt"]}) + "\n" for r in sft))
    return {"pairs": str(root / "pairs.jsonl"), "sft": str(root / "sft.jsonl")}


def test_examples_import_only_the_public_api():
    from test_plugin_contract import plugin_import_problems

    files = sorted(EXAMPLES.glob("paddlellm_example_plugins/*.py"))
    assert len(files) >= 4 and plugin_import_problems(files) == []
    for f in files:  # nothing but paddlellm.api from the core
        modules = {n.module for n in ast.walk(ast.parse(f.read_text()))
                   if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("paddlellm")}
        assert modules <= {"paddlellm.api"}, (f, modules)


def test_the_alignment_loss_trains_through_llm_run(manager, data, tmp_path):
    out = tmp_path / "ln_dpo"
    summary = llm_run(manager, "--align", "ln_dpo", "--beta", "2.0", "--data", data["pairs"],
                      "--eval_data", data["pairs"], "--output_dir", str(out),
                      "--learning_rate", "5e-4", *COMMON)
    assert summary["stage"] == "align" and summary["steps"] == 4 and summary["beta"] == 2.0
    assert summary["reference"] == "frozen copy"
    assert summary["eval_after"]["eval_loss"] < summary["eval_before"]["eval_loss"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("margin" in r for r in records)


def test_the_peft_method_trains_saves_in_peft_format_and_reloads(manager, data, tmp_path):
    import paddle

    from paddlellm.api import AutoModelForCausalLM, disable_adapters

    out = tmp_path / "ia3"
    summary = llm_run(manager, "--stage", "sft", "--peft", "ia3", "--data", data["sft"],
                      "--output_dir", str(out), "--learning_rate", "5e-2", *COMMON)
    assert summary["peft"] == "ia3" and summary["steps"] == 4
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3" and config["target_modules"] == ["k_proj", "v_proj"]
    assert not (out / "model.safetensors").exists()

    tuned = AutoModelForCausalLM.from_pretrained(str(out))  # the base, then the adapter
    scales = [p.numpy() for n, p in tuned.named_parameters() if n.endswith("ia3_l")]
    assert len(scales) == 2 * tuned.config.num_hidden_layers
    assert max(float(np.abs(s - 1).max()) for s in scales) > 1e-3  # it learned something
    ids = paddle.to_tensor([[1, 5, 9, 13, 2, 7]])
    tuned.eval()
    with paddle.no_grad():
        adapted = tuned(ids).numpy()
        with disable_adapters(tuned):
            base = tuned(ids).numpy()
        merged = manager.registry.load("peft_method", "ia3").merge(tuned)
        folded = merged(ids).numpy()
    assert np.abs(adapted - base).max() > 1e-4
    np.testing.assert_allclose(folded, adapted, atol=1e-4)
    assert not [n for n, _ in merged.named_parameters() if "ia3_l" in n]


def test_the_quantizer_snaps_weights_saves_loads_and_trains_adapters(manager, data, tmp_path):
    import paddle

    from paddlellm.api import DEMO_MODEL_DIR, AutoModelForCausalLM
    from paddlellm_example_plugins.rtn import save_quantized

    model = AutoModelForCausalLM.from_pretrained(str(DEMO_MODEL_DIR),
                                                 quant_type="rtn_int8_sim")
    assert model.quantization_config["quant_type"] == "rtn_int8_sim"
    weight = model.model.layers[0].self_attn.q_proj.weight.numpy()  # (in, out)
    steps = np.abs(weight).max(axis=0) / 127
    np.testing.assert_allclose(weight / steps, np.round(weight / steps), atol=1e-3)

    save_quantized(model, str(tmp_path / "q"))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "q"))  # via load_pretrained
    assert loaded.quantization_config["quant_type"] == "rtn_int8_sim"
    ids = paddle.to_tensor([[1, 5, 9, 13]])
    model.eval(), loaded.eval()
    with paddle.no_grad():
        np.testing.assert_allclose(loaded(ids).numpy(), model(ids).numpy(), atol=1e-5)

    out = tmp_path / "qlora"
    summary = llm_run(manager, "--stage", "sft", "--peft", "lora", "--quant_type", "rtn_int8_sim",
                      "--rtn_skip_modules", "lm_head", "o_proj", "--data", data["sft"],
                      "--output_dir", str(out), "--learning_rate", "5e-3", *COMMON)
    assert summary["steps"] == 4 and (out / "adapter_config.json").is_file()


def test_the_examples_install_as_a_distribution_and_pass_llm_plugins_check(tmp_path):
    import os
    import subprocess

    from helpers import run_cli

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(EXAMPLES)],
                   check=True, capture_output=True)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(target),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = run_cli("plugins", "--check", "--json", env=env, check=True)  # exit 0: no failure
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    for key in (("alignment_loss", "ln_dpo"), ("peft_method", "ia3"),
                ("quantizer", "rtn_int8_sim")):
        assert rows[key]["distribution"] == "paddlellm-example-plugins", key
    assert "failed" not in proc.stderr
    listing = run_cli("run", "--help", env=env, check=True).stdout
    assert "--ia3_target_modules" in listing and "--rtn_skip_modules" in listing
