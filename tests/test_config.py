"""Run configuration: file + flags, validation messages, plugin names and plugin options."""
from __future__ import annotations

import json
import types

import pytest
from pydantic import BaseModel

from paddlellm import hookimpl
from paddlellm.plugin.config import build_run_config, parse_overrides
from paddlellm.errors import ConfigError, UnknownPluginError
from paddlellm.plugin.manager import PluginManager


def test_overrides_parse_flags_lists_and_booleans():
    got = parse_overrides(["--learning-rate", "1e-4", "--bf16", "--no_recompute",
                           "--weight_list", "0.5", "0.5", "--output_dir=/tmp/x", "--seed", "-1"])
    assert got == {"learning_rate": "1e-4", "bf16": True, "recompute": False,
                   "weight_list": ["0.5", "0.5"], "output_dir": "/tmp/x", "seed": "-1"}
    with pytest.raises(ConfigError, match="expected an option"):
        parse_overrides(["oops"])


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_and_flags_merge_with_flags_winning(tmp_path, suffix):
    data = {"max_steps": 10, "learning_rate": 0.001, "stage": "pretrain"}
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text("max_steps: 10\nlearning_rate: 0.001\nstage: pretrain\n")
    cfg = build_run_config(path, ["--max_steps", "20", "--bf16"])
    assert cfg.max_steps == 20 and cfg.learning_rate == 0.001 and cfg.bf16 is True
    assert cfg.stage == "pretrain"


def test_unknown_key_names_closest_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_run_config(None, ["--lerning_rate", "0.1"])
    assert "unknown config key 'lerning_rate'" in str(info.value)
    assert "closest valid keys: learning_rate" in str(info.value)
    path = tmp_path / "c.json"
    path.write_text('{"per_device_batch_size": 4}')
    with pytest.raises(ConfigError, match="per_device_train_batch_size"):
        build_run_config(path)


def test_bad_values_say_which_key_and_what_was_given(tmp_path):
    with pytest.raises(ConfigError, match=r"'max_steps'.*got 'ten'"):
        build_run_config(None, ["--max_steps", "ten"])
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        build_run_config(None, ["--lr_scheduler_type", "exponential"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_run_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        build_run_config(tmp_path / "missing.json")


def test_unknown_plugin_name_lists_installed_names():
    registry = _registry_with_model()
    with pytest.raises(UnknownPluginError, match="unknown model 'toy-modle'.*'toy-model'"):
        build_run_config(None, ["--model", "toy-modle"], registry=registry)
    with pytest.raises(UnknownPluginError,
                       match="unknown trainer_strategy 'singel'; did you mean 'single'"):
        build_run_config(None, ["--model", "toy-model", "--strategy", "singel"], registry=registry)
    with pytest.raises(UnknownPluginError, match="unknown backend 'tpu'.*valid: cpu, gpu"):
        build_run_config(None, ["--model", "toy-model", "--device", "tpu:1"], registry=registry)
    cfg = build_run_config(None, ["--model", "toy-model", "--device", "cpu:0"], registry=registry)
    assert cfg.device == "cpu:0"


class _ToyOptions(BaseModel):
    model_config = {"extra": "forbid"}
    toy_rank: int = 4


def _registry_with_model():
    manager = PluginManager()

    def toy_strategy(options):  # a strategy factory; its options class gives the run keys
        raise AssertionError("not called by config validation")

    toy_strategy.config_class = _ToyOptions
    # the members of paddlellm.interfaces.ModelFamily (targets are checked when they load)
    toy_family = types.SimpleNamespace(
        name="toy-model", description="a toy", model_types=(), presets={}, config_from_hf=dict,
        config_to_hf=dict, config_for=dict, build=dict, from_pretrained=dict, rename=dict,
        is_ignored=dict, from_hf_tensor=dict, to_hf_state=dict, save_groups=dict)

    class Extra:
        @hookimpl
        def register_models(self, register):
            register("toy-model", toy_family)

        @hookimpl
        def register_trainer_strategies(self, register):
            register("toy", toy_strategy)

    manager.register(Extra(), "extra", "toy-dist", "0.0.1")
    return manager.registry


def test_selected_plugins_contribute_their_own_keys():
    registry = _registry_with_model()
    cfg = build_run_config(None, ["--model", "toy-model", "--strategy", "toy", "--toy_rank", "8"],
                           registry=registry)
    assert cfg.plugin_options["trainer_strategy"].toy_rank == 8
    # the key exists only when its plugin is selected
    with pytest.raises(ConfigError, match="unknown config key 'toy_rank'"):
        build_run_config(None, ["--model", "toy-model", "--toy_rank", "8"], registry=registry)
    with pytest.raises(ConfigError, match="'toy_rank'.*got 'big'"):
        build_run_config(None, ["--model", "toy-model", "--strategy", "toy", "--toy_rank", "big"],
                         registry=registry)
