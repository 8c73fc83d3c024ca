"""``llm quantize``: config-file form with flag overrides, perplexity report, errors."""
from __future__ import annotations

import json

import pytest

from paddlellm_quant.cli import run_quantize_cli
from tests.helpers import run_cli


def test_llm_quantize_config_file_prints_perplexity_and_loads(tmp_path):
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"src": f"Repeat: a b {c}", "tgt": f"a b {c}"}) + "\n"
                             for c in "cdefghijklmnop") + json.dumps({"text": "Sort: 3 1 2 1 2 3"}) + "\n")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("Repeat: x y z x y z\nReverse: a b c c b a\nCount: a b c 3\n")
    cfg = tmp_path / "quant.yaml"
    cfg.write_text(f"quant_type: gptq\ncalibration_data: {calib}\neval_data: {heldout}\n"
                   "group_size: 32\nseqlen: 16\nnsamples: 4\n")
    out = tmp_path / "out"
    proc = run_cli("quantize", "--config", str(cfg), "--output_dir", str(out), "--group_size", "64",
                   check=True)
    assert "perplexity before (float32)" in proc.stdout and "perplexity after (gptq)" in proc.stdout
    report = json.loads((out / "quantize_report.json").read_text())
    assert report["options"]["group_size"] == 64  # the flag wins over the file
    assert report["bytes_after"]["linear_layers"] < 0.2 * report["bytes_before"]["linear_layers"]
    assert json.loads((out / "config.json").read_text())["quantization_config"]["group_size"] == 64
    assert (out / "tokenizer.json").is_file()
    from paddlellm import AutoModelForCausalLM

    from paddlellm_quant.ppl import perplexity
    from paddlellm_quant.calibration import encode_texts, read_texts
    from paddlellm import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    ids = encode_texts(AutoTokenizer.from_pretrained(out), read_texts(heldout))
    assert perplexity(model, ids) == pytest.approx(report["ppl_after"], rel=1e-6)


def test_llm_quantize_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown option.*percdam.*valid:.*percdamp"):
        run_quantize_cli(["--quant_type", "gptq", "--output_dir", str(tmp_path), "--percdam", "0.1"],
                         log=lambda s: None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"src": "ok"}\n{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no 'text' or 'src' field \(keys: prompt\)"):
        run_quantize_cli(["--quant_type", "awq", "--output_dir", str(tmp_path),
                          "--calibration_data", str(bad)], log=lambda s: None)
    proc = run_cli("quantize", "--quant_type", "int3", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "unknown quantizer 'int3'" in proc.stderr


def test_quantize_checkpoint_without_tokenizer(tmp_path):
    """Calibration-free types need no tokenizer (the report is skipped, with a note);
    calibrated types say they need one."""
    import shutil
    from pathlib import Path

    import paddlellm

    bare = tmp_path / "bare"
    src = Path(paddlellm.__file__).parent / "assets" / "qwen-demo"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, bare / name)
    lines = []
    report = run_quantize_cli(["--model_name_or_path", str(bare), "--quant_type",
                               "weight_only_int8", "--output_dir", str(tmp_path / "q8")],
                              log=lines.append)
    assert "ppl_before" not in report and any("no tokenizer" in line for line in lines)
    assert (tmp_path / "q8" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="no tokenizer"):
        run_quantize_cli(["--model_name_or_path", str(bare), "--quant_type", "gptq",
                          "--calibration_data", str(tmp_path / "x.txt"),
                          "--output_dir", str(tmp_path / "g")])


def test_paddlenlp_quantization_argument_file(tmp_path):
    """PaddleNLP's run_quantization.py files run as written (llm run dispatches to quantize)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "quant.json").write_text("".join(json.dumps({"src": f"Repeat: a b {c}", "tgt": f"a b {c}"})
                                             + "\n" for c in "cdefghijklmnop"))
    (data / "dev.json").write_text(json.dumps({"src": "Count: a b c", "tgt": "3"}) + "\n")
    cfg = tmp_path / "gptq_argument.json"
    cfg.write_text(json.dumps({"dataset_name_or_path": str(data), "output_dir": str(tmp_path / "o"),
                               "do_gptq": True, "gptq_step": 2, "per_device_train_batch_size": 2,
                               "src_length": 64, "max_length": 128, "do_eval": True,
                               "unified_checkpoint": True, "seqlen": 16}))
    proc = run_cli("run", str(cfg), check=True)
    assert "note: unified_checkpoint" in proc.stdout
    report = json.loads((tmp_path / "o" / "quantize_report.json").read_text())
    assert report["quant_type"] == "gptq" and "ppl_after" in report
