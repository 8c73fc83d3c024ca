"""Each deterministic method against mergekit 0.1.5 / peft / the textbook formula."""
from __future__ import annotations

import os

import numpy as np
import pytest

from merge_testutil import EXPECTED, assert_state_close, expected, fx, read_all
from paddlellm_merge.cli import run_merge_cli
from paddlellm_merge.engine import merge
from paddlellm_merge.spec import MergeSpec, ModelInput, spec_from_yaml


def run_cli(args, tmp_path, quiet):
    out = str(tmp_path / "out")
    run_merge_cli([*args, "--output_path", out, "--no-parity"], log=quiet)
    return read_all(out)


def test_linear_cli_matches_mergekit(tmp_path, quiet):
    got = run_cli(["--merge_method", "linear", "--model_path_list", fx("m1"), fx("m2"),
                   "--weight_list", "0.3", "0.7"], tmp_path, quiet)
    assert_state_close(got, expected("linear"))


def test_linear_weights_unnormalized_double(tmp_path, quiet):
    got = run_cli(["--model_path_list", fx("m1"), fx("m2"), "--weight_list", "0.6", "1.4",
                   "--normalize", "false"], tmp_path, quiet)
    want = expected("linear")
    assert_state_close(got, {k: 2 * v for k, v in want.items()}, atol=5e-6)


def test_slerp_cli_whole_tensor_matches_formula(tmp_path, quiet):
    got = run_cli(["--merge_method", "slerp", "--model_path_list", fx("base"), fx("m1"),
                   "--slerp_alpha", "0.3"], tmp_path, quiet)
    assert_state_close(got, expected("slerp_tensor"))


def test_slerp_mergekitwise_matches_mergekit(tmp_path, quiet):
    spec = MergeSpec("slerp", [ModelInput(fx("base")), ModelInput(fx("m1"))], fx("base"),
                     {"t": 0.3})
    merge(spec, str(tmp_path / "o"), log=quiet)
    assert_state_close(read_all(str(tmp_path / "o")), expected("slerp_mergekit"))


def test_slerp_endpoints_and_two_model_limit(tmp_path, quiet):
    from paddlellm_merge.methods.slerp import slerp

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 5)).astype(np.float32)
    np.testing.assert_allclose(slerp(0.0, a, b), a, atol=1e-6)
    np.testing.assert_allclose(slerp(1.0, a, b), b, atol=1e-6)
    np.testing.assert_allclose(slerp(0.25, a, 2 * a), 1.25 * a, atol=1e-6)  # collinear -> lerp
    from paddlellm_merge import MergeError

    with pytest.raises(MergeError, match="slerp merges exactly two models"):
        run_cli(["--merge_method", "slerp", "--model_path_list", fx("base"), fx("m1"), fx("m2")],
                tmp_path, quiet)


def test_task_arithmetic_matches_mergekit(tmp_path, quiet):
    got = run_cli(["--merge_method", "task_arithmetic", "--base_model_path", fx("base"),
                   "--model_path_list", fx("m1"), fx("m2"), "--weight_list", "0.6", "0.4",
                   "--lambda", "1.5"], tmp_path, quiet)
    assert_state_close(got, expected("task_arithmetic"))


def test_ties_matches_mergekit(tmp_path, quiet):
    spec = MergeSpec("ties", [ModelInput(fx("m1"), {"weight": 0.6, "density": 0.5}),
                              ModelInput(fx("m2"), {"weight": 0.9, "density": 0.3})], fx("base"))
    merge(spec, str(tmp_path / "o"), log=quiet)
    assert_state_close(read_all(str(tmp_path / "o")), expected("ties"))


def test_dare_ties_at_density_one_is_deterministic_and_matches(tmp_path, quiet):
    spec = MergeSpec("dare_ties", [ModelInput(fx("m1"), {"weight": 0.6, "density": 1.0}),
                                   ModelInput(fx("m2"), {"weight": 0.9, "density": 1.0})],
                     fx("base"))
    merge(spec, str(tmp_path / "o"), log=quiet)
    assert_state_close(read_all(str(tmp_path / "o")), expected("dare_ties_density1"))


def test_yaml_ties_with_gradients_and_filters_matches_mergekit(tmp_path, quiet, monkeypatch):
    monkeypatch.chdir(fx())  # the YAML's paths are relative, as mergekit resolves them
    out = str(tmp_path / "o")
    run_merge_cli([fx("ties_yaml.yaml"), "--output_path", out, "--no-parity"], log=quiet)
    assert_state_close(read_all(out), expected("ties_yaml"))


def test_yaml_slerp_with_filtered_gradients_matches_mergekit(tmp_path, quiet, monkeypatch):
    monkeypatch.chdir(fx())
    spec = spec_from_yaml(fx("slerp_yaml.yaml"))
    merge(spec, str(tmp_path / "o"), log=quiet)
    got, want = read_all(str(tmp_path / "o")), expected("slerp_yaml")
    assert_state_close(got, want)
    # the gradient really varies t: layer 0 attention is the base (t=0), layer 2 is m1 (t=1)
    base, m1 = read_all(fx("base")), read_all(fx("m1"))
    q0, q2 = "model.layers.0.self_attn.q_proj.weight", "model.layers.2.self_attn.q_proj.weight"
    np.testing.assert_allclose(got[q0], base[q0], atol=1e-6)
    np.testing.assert_allclose(got[q2], m1[q2], atol=1e-6)


def test_expected_fixtures_present():
    names = {f[:-len(".safetensors")] for f in os.listdir(EXPECTED)}
    assert {"linear", "slerp_mergekit", "slerp_tensor", "task_arithmetic", "ties", "ties_yaml",
            "slerp_yaml", "lora_cat_merged"} <= names
