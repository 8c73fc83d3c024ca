"""The streaming engine: checks with clear errors, dtypes, shards, CLI, transformers loading."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from merge_testutil import EXPECTED, expected, fx, read_all
from paddlellm_merge import MergeError
from paddlellm_merge.cli import run_merge_cli
from paddlellm_merge.engine import merge
from paddlellm_merge.spec import MergeSpec, ModelInput, spec_from_dict

DEVENV_PY = os.environ.get("PADDLELLM_DEV_PYTHON", "/work/devenv/bin/python")  # make test: .venv-oracle


def variant(tmp_path, name, *, change=None, drop=None, config=None):
    """A copy of m1 with one tensor reshaped/dropped or a config field changed."""
    from paddlellm.api import save_state_dict

    state = read_all(fx("m1"))
    if change:
        state[change] = np.zeros((3, 3), dtype=np.float32)
    if drop:
        del state[drop]
    out = tmp_path / name
    save_state_dict(state, out)
    with open(fx("m1", "config.json")) as f:
        cfg = json.load(f)
    cfg.update(config or {})
    (out / "config.json").write_text(json.dumps(cfg))
    return str(out)


def lin(*paths):
    return MergeSpec("linear", [ModelInput(p, {"weight": 1.0}) for p in paths])


def test_shape_mismatch_is_a_clear_error(tmp_path, quiet):
    bad = variant(tmp_path, "bad", change="model.layers.1.mlp.up_proj.weight")
    with pytest.raises(MergeError, match=r"shape mismatch for tensor "
                       r"'model.layers.1.mlp.up_proj.weight': \(32, 16\) in .* but \(3, 3\) in"):
        merge(lin(fx("m1"), bad), str(tmp_path / "o"), log=quiet)


def test_architecture_mismatch_is_a_clear_error(tmp_path, quiet):
    other = variant(tmp_path, "llama", config={"model_type": "llama",
                                               "architectures": ["LlamaForCausalLM"]})
    with pytest.raises(MergeError, match="different architectures: model_type is 'qwen2' in "
                                         ".* but 'llama' in"):
        merge(lin(fx("m1"), other), str(tmp_path / "o"), log=quiet)


def test_missing_tensor_is_a_clear_error(tmp_path, quiet):
    fewer = variant(tmp_path, "fewer", drop="lm_head.weight")
    with pytest.raises(MergeError, match="models have different tensors: .* missing lm_head.weight"):
        merge(lin(fx("m1"), fewer), str(tmp_path / "o"), log=quiet)


def test_spec_errors(tmp_path, quiet):
    with pytest.raises(MergeError, match="'ties' needs a base model"):
        merge(MergeSpec("ties", [ModelInput(fx("m1"), {"weight": 1})]), str(tmp_path / "o"),
              log=quiet)
    with pytest.raises(Exception, match="(?s)frankenmerge.*linear"):
        merge(MergeSpec("frankenmerge", [ModelInput(fx("m1"))]), str(tmp_path / "o"), log=quiet)
    with pytest.raises(MergeError, match="unknown parameter 'densty' .* valid: .*density"):
        merge(MergeSpec("ties", [ModelInput(fx("m1"), {"weight": 1, "densty": 0.5})], fx("base")),
              str(tmp_path / "o"), log=quiet)
    with pytest.raises(MergeError, match="missing required parameter 'weight'"):
        merge(MergeSpec("task_arithmetic", [ModelInput(fx("m1"))], fx("base")),
              str(tmp_path / "o"), log=quiet)
    with pytest.raises(MergeError, match="unknown key 'slerp_t'"):
        spec_from_dict({"merge_method": "slerp", "models": [fx("m1")], "slerp_t": 0.5})
    with pytest.raises(MergeError, match="'slices' .* not supported"):
        spec_from_dict({"merge_method": "passthrough", "slices": []})
    with pytest.raises(MergeError, match="unknown dtype 'float12'"):
        spec_from_dict({"merge_method": "linear", "models": [fx("m1")], "dtype": "float12"})
    with pytest.raises(MergeError, match="at least two models"):
        run_merge_cli(["--model_path_list", fx("m1"), "--output_path", str(tmp_path / "o")])
    with pytest.raises(MergeError, match="--weight_list has 3 values for 2 models"):
        run_merge_cli(["--model_path_list", fx("m1"), fx("m2"), "--weight_list", "1", "2", "3",
                       "--output_path", str(tmp_path / "o")])
    with pytest.raises(MergeError, match="merging runs in NumPy on the CPU"):
        run_merge_cli(["--model_path_list", fx("m1"), fx("m2"), "--device", "gpu",
                       "--output_path", str(tmp_path / "o")])
    with pytest.raises(MergeError, match="is one of the inputs"):
        merge(lin(fx("m1"), fx("m2")), fx("m2"), log=quiet)


def test_bf16_conversion_matches_torch():
    from paddlellm.api import CheckpointReader

    from paddlellm_merge.io import to_storage

    r = CheckpointReader(os.path.join(EXPECTED, "bf16_cases.safetensors"))
    bits = to_storage(r.get_numpy("x_f32"), "bfloat16")
    np.testing.assert_array_equal(bits, r.get_raw("x_bf16"))


def test_bf16_output_is_real_bf16(tmp_path, quiet):
    out = tmp_path / "o"
    run_merge_cli(["--model_path_list", fx("m1"), fx("m2"), "--weight_list", "0.3", "0.7",
                   "--dtype", "bf16", "--output_path", str(out), "--no-parity"], log=quiet)
    from paddlellm.api import CheckpointReader

    r = CheckpointReader(out)
    assert {r.dtype(k) for k in r.keys()} == {"bfloat16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    want = expected("linear")
    for k in want:  # the float32 merge, rounded once to bf16
        np.testing.assert_allclose(r.get_numpy(k), want[k], rtol=2 ** -8, atol=1e-6, err_msg=k)
    assert os.path.getsize(out / "model.safetensors") < 0.6 * os.path.getsize(fx("m1", "model.safetensors"))


def test_sharded_output_equals_single_file(tmp_path, quiet):
    spec = lin(fx("m1"), fx("m2"))
    merge(spec, str(tmp_path / "one"), log=quiet)
    merge(lin(fx("m1"), fx("m2")), str(tmp_path / "many"), max_shard_size="8KB", n_process=2,
          log=quiet)
    files = os.listdir(tmp_path / "many")
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 3
    one, many = read_all(str(tmp_path / "one")), read_all(str(tmp_path / "many"))
    assert sorted(one) == sorted(many)
    for k in one:
        np.testing.assert_array_equal(one[k], many[k])
    for f in ("config.json", "generation_config.json", "merge_config.json"):
        assert f in files


def test_llm_help_does_not_import_paddle():
    code = ("import sys; from paddlellm.cli import build_app; from typer.testing import CliRunner;"
            "r = CliRunner().invoke(build_app(), ['--help']); assert 'merge' in r.output, r.output;"
            "print('paddle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_llm_merge_console_command(tmp_path):
    llm = os.path.join(os.path.dirname(sys.executable), "llm")
    out = subprocess.run([llm, "merge", "--merge_method", "ties", "--base_model_path", fx("base"),
                          "--model_path_list", fx("m1"), fx("m2"), "--output_path",
                          str(tmp_path / "o"), "--no-parity"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "merging 39 tensors of 3 checkpoints with 'ties'" in out.stdout
    bad = subprocess.run([llm, "merge", "--merge_method", "ties", "--model_path_list", fx("m1"),
                          fx("m2"), "--output_path", str(tmp_path / "p")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "needs a base model" in bad.stderr


@pytest.mark.skipif(not os.path.exists(DEVENV_PY), reason=f"torch + transformers not available at {DEVENV_PY} (set PADDLELLM_DEV_PYTHON; make test builds .venv-oracle)")
def test_merged_checkpoint_loads_with_transformers(tmp_path, quiet):
    out = tmp_path / "o"
    run_merge_cli(["--merge_method", "ties", "--base_model_path", fx("base"), "--model_path_list",
                   fx("m1"), fx("m2"), "--dtype", "bfloat16", "--max_shard_size", "20KB",
                   "--output_path", str(out), "--no-parity"], log=quiet)
    ours = read_all(str(out))
    np.savez(tmp_path / "ours.npz", **ours)
    code = f"""
import numpy as np, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({str(out)!r})
assert m.dtype == torch.bfloat16, m.dtype
ref = np.load({str(tmp_path / 'ours.npz')!r})
sd = m.state_dict()
for k in ref.files:
    assert np.array_equal(sd[k].float().numpy(), ref[k]), k
m(torch.tensor([[1, 2, 3]]))
print("loaded", len(ref.files))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    res = subprocess.run([DEVENV_PY, "-c", code], capture_output=True, text=True, timeout=240,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "loaded 39" in res.stdout


def test_yaml_typos_are_errors_but_inapplicable_flags_are_dropped(tmp_path, quiet):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"merge_method: ties\nbase_model: {fx('base')}\nmodels:\n"
                   f"  - model: {fx('m1')}\n    parameters: {{weight: 1, densty: 0.5}}\n")
    with pytest.raises(MergeError, match="unknown parameter 'densty' in parameters of"):
        run_merge_cli([str(cfg), "--output_path", str(tmp_path / "o"), "--seed", "3"], log=quiet)
    # PaddleNLP passes every flag to every method: --weight_list/--reserve_p mean nothing to slerp
    run_merge_cli(["--merge_method", "slerp", "--model_path_list", fx("base"), fx("m1"),
                   "--weight_list", "1", "1", "--reserve_p", "0.3", "--slerp_alpha", "0.3",
                   "--output_path", str(tmp_path / "s"), "--no-parity"], log=quiet)
    merged = json.loads((tmp_path / "s" / "merge_config.json").read_text())
    assert merged["parameters"] == {"t": 0.3}


def test_pytorch_bin_input_is_read_without_torch(tmp_path, quiet):
    merge(MergeSpec("linear", [ModelInput(fx("m1"), {"weight": 0.3}),
                               ModelInput(fx("m2_bin"), {"weight": 0.7})]),
          str(tmp_path / "o"), log=quiet)
    from merge_testutil import assert_state_close

    assert_state_close(read_all(str(tmp_path / "o")), expected("linear"))
    assert "torch" not in sys.modules


def test_files_copied_from_the_base(tmp_path, quiet):
    base = tmp_path / "base"
    shutil.copytree(fx("base"), base)
    (base / "tokenizer.json").write_text("{}")
    (base / "tokenizer_config.json").write_text("{}")
    (base / "ice_text.model").write_bytes(b"spm")  # ChatGLM-6B's SentencePiece file
    (base / "NOTES.txt").write_text("hello")
    out = tmp_path / "o"
    run_merge_cli(["--merge_method", "task_arithmetic", "--base_model_path", str(base),
                   "--model_path_list", fx("m1"), fx("m2"), "--copy_file_list", "NOTES.txt",
                   "--output_path", str(out), "--no-parity"], log=quiet)
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "ice_text.model", "NOTES.txt", "merge_config.json", "model.safetensors"):
        assert (out / f).exists(), f
    with pytest.raises(MergeError, match="--copy_file_list: 'MISSING.txt' not found"):
        run_merge_cli(["--model_path_list", fx("m1"), fx("m2"), "--copy_file_list", "MISSING.txt",
                       "--output_path", str(tmp_path / "p"), "--no-parity"], log=quiet)
    assert not (tmp_path / "p").exists()  # checked before anything is written


def test_merging_imports_neither_paddle_nor_torch(tmp_path):
    code = (f"import sys; from paddlellm_merge.cli import run_merge_cli; run_merge_cli(["
            f"'--merge_method', 'della', '--base_model_path', {fx('base')!r}, '--model_path_list', "
            f"{fx('m1')!r}, {fx('m2')!r}, '--output_path', {str(tmp_path / 'o')!r}, '--no-parity'],"
            f" log=lambda s: None); print('paddle' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False False", out.stderr
