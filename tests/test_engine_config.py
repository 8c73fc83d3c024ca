"""One ``EngineConfig``: every option has one spelling as flag, variable and keyword; the
commands take it from there; bad values are named; device parsing sits low in the core."""
from __future__ import annotations

import json
import subprocess
import sys
import types
import typing

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import paddlellm.serving
from paddlellm.cli import build_app, main
from paddlellm.cli.infer import CHAT_ENGINE_OPTIONS, PREDICT_ENGINE_OPTIONS
from paddlellm.plugin.device import parse_device
from paddlellm.engine import EngineConfig
from paddlellm.errors import BackendUnavailableError, ConfigError
from paddlellm.serving import ServerLimits
from paddlellm.serving.env_app import options_from_env

FIELDS = list(EngineConfig.model_fields)
#: a valid value that differs from the default, for each option
SPECIAL = {"dtype": "bfloat16", "device": "gpu:1", "attention_kernel": "reference",
           "cachekv_int8_type": "static", "speculate_method": "inference_with_reference",
           "lora_modules": (("a", "/x"),)}
#: how the command line and the environment spell a value that is not ``str(value)``
TEXT = {"lora_modules": "a=/x"}


def sample(name: str):
    if name in SPECIAL:
        return SPECIAL[name]
    field = EngineConfig.model_fields[name]
    kind = [a for a in typing.get_args(field.annotation) if a is not type(None)] or [field.annotation]
    if kind[0] is bool:
        return not field.default
    if kind[0] is str:
        return f"value-of-{name}"
    if kind[0] is float:
        return (field.default or 1.0) + 1.5
    return (field.default or 2) + 3


@pytest.fixture
def captured(monkeypatch):
    """``llm serve`` with create_app/run_server replaced: the config it would serve."""
    seen: dict = {}

    def fake_create_app(model_name_or_path=None, *, config=None, api_key=None, **options):
        seen["config"], seen["api_key"] = config, api_key
        return types.SimpleNamespace(state=types.SimpleNamespace(
            server=types.SimpleNamespace(model_name="m")))

    monkeypatch.setattr(paddlellm.serving, "create_app", fake_create_app)
    monkeypatch.setattr(paddlellm.serving, "run_server", lambda app, **kw: None)
    return seen


def serve(args: list[str], env: dict | None = None):
    return CliRunner().invoke(build_app(), ["serve", *args], env=env or {})


def test_names_are_derived_from_the_field_name():
    for name in FIELDS:
        assert EngineConfig.flag(name) == f"--{name}"
        assert EngineConfig.env_vars(name)[0] == f"PADDLELLM_{name.upper()}"
    assert EngineConfig.env_vars("model_name_or_path") == ["PADDLELLM_MODEL_NAME_OR_PATH",
                                                           "PADDLELLM_MODEL"]


@pytest.mark.parametrize("name", FIELDS)
def test_every_option_is_reachable_by_flag_variable_and_keyword(name, captured):
    value = sample(name)
    assert value != EngineConfig.model_fields[name].default
    assert getattr(EngineConfig(**{name: value}), name) == value  # the Python keyword

    text = TEXT.get(name, str(value))
    result = serve([f"--{name}", text])  # the flag of `llm serve`
    assert result.exit_code == 0, result.output
    assert getattr(captured["config"], name) == value

    var = f"PADDLELLM_{name.upper()}"
    result = serve([], env={var: text})  # the variable, read by `llm serve`
    assert result.exit_code == 0, result.output
    assert getattr(captured["config"], name) == value
    assert options_from_env({var: text})[name] == value  # ... and by the uvicorn app


def test_flag_wins_over_variable_over_default(captured):
    assert serve([], env={"PADDLELLM_MAX_NUM_SEQS": "7"}).exit_code == 0
    assert captured["config"].max_num_seqs == 7
    assert serve(["--max_num_seqs", "9"], env={"PADDLELLM_MAX_NUM_SEQS": "7"}).exit_code == 0
    assert captured["config"].max_num_seqs == 9
    assert serve([]).exit_code == 0
    assert captured["config"] == EngineConfig()
    assert serve([], env={"PADDLELLM_MODEL": "old-name"}).exit_code == 0  # the kept alias
    assert captured["config"].model_name_or_path == "old-name"


def test_predict_and_chat_flags_are_the_config_fields():
    root = get_command(build_app())
    for command, names in (("predict", PREDICT_ENGINE_OPTIONS), ("chat", CHAT_ENGINE_OPTIONS)):
        params = {p.name: p for p in root.commands[command].params}
        for name in names:
            field = EngineConfig.model_fields[name]
            assert params[name].opts == [f"--{name}"], (command, name)
            assert params[name].default == field.default and params[name].help == field.description
            assert not params[name].envvar  # only the server reads the variables


def test_bad_values_are_named(captured, capsys):
    for args, message in ((["--max_num_seqs", "0"], "error: --max_num_seqs: Input should be "
                                                    "greater than or equal to 1"),
                          (["--dtype", "int4"], "error: --dtype: valid dtypes are float32, "
                                                "float16, bfloat16"),
                          (["--speculate_method", "eagle"], "error: unknown --speculate_method "
                                                            "'eagle'; valid: None")):
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        assert "config" not in captured  # refused before anything was built
    with pytest.raises(ConfigError, match=r"PADDLELLM_BLOCK_SIZE='0': Input should be greater"):
        options_from_env({"PADDLELLM_BLOCK_SIZE": "0"})
    with pytest.raises(ConfigError, match=r"PADDLELLM_CACHEKV_INT8_TYPE='dynamic': PaddleNLP no "
                                          r"longer maintains dynamic"):
        options_from_env({"PADDLELLM_CACHEKV_INT8_TYPE": "dynamic"})
    with pytest.raises(ConfigError, match=r"^unknown speculate_method 'medusa'; valid: None, inference_with_reference"):
        EngineConfig.build(speculate_method="medusa")
    with pytest.raises(TypeError, match="unknown engine option.*max_num_seq;"):
        EngineConfig(max_num_seq=4)


def test_config_is_frozen_and_replace_validates():
    config = EngineConfig(dtype="bf16", device="auto", speculate_method="None")
    assert (config.dtype, config.device, config.speculate_method) == ("bfloat16", None, None)
    with pytest.raises(Exception, match="frozen"):
        config.block_size = 8
    assert config.replace(block_size=8).block_size == 8 and config.block_size == 64
    with pytest.raises(ValueError, match="block_size"):
        config.replace(block_size=0)


def test_server_limits_are_the_config_options():
    assert ServerLimits() == ServerLimits.from_config(EngineConfig())
    limits = ServerLimits.from_config(EngineConfig(body_timeout=2.5, prep_threads=2))
    assert (limits.body_timeout, limits.prep_threads) == (2.5, 2)


def test_parse_device():
    assert parse_device(None) == parse_device("auto") == (None, 0)
    assert parse_device("cpu") == ("cpu", 0) and parse_device("gpu:1") == ("gpu", 1)
    for bad in ("gpu:x", "gpu:", ":1"):
        with pytest.raises(BackendUnavailableError, match=f"bad --device '{bad}'"):
            parse_device(bad)


def test_device_and_config_modules_import_nothing_above_them():
    code = ("import json, sys, paddlellm.plugin.device, paddlellm.engine.config\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('paddlellm'))))\n"
            "assert 'numpy' not in sys.modules and 'paddle' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == sorted([
        "paddlellm", "paddlellm.plugin", "paddlellm.plugin.device", "paddlellm.engine",
        "paddlellm.engine.config", "paddlellm.errors", "paddlellm.hookspecs", "paddlellm.version"])


def test_a_bad_keyword_override_is_a_config_error_naming_the_option():
    from paddlellm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--block_size=0: .*greater than or equal to 1"):
        EngineConfig.from_env({}, block_size=0)
    with pytest.raises(ConfigError, match="PADDLELLM_BLOCK_SIZE"):  # a variable: its name
        EngineConfig.from_env({"PADDLELLM_BLOCK_SIZE": "-3"})
