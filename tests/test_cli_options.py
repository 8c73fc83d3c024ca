"""One option spelling layer: every command takes ``--key_name`` and ``--key-name``; help shows
the underscore form; ``llm run/merge/quantize --help`` list their options like every command."""
from __future__ import annotations

import json

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from paddlellm.cli import build_app, main
from paddlellm.cli.options import canonical_args
from paddlellm.plugin.config import CORE_KEYS, build_run_config
from paddlellm.plugin.manager import get_plugin_manager

WIDE = {"COLUMNS": "240", "TERMINAL_WIDTH": "240"}  # no wrapped or shortened option names


def _dashed(opt: str) -> str:
    return "--" + opt[2:].replace("_", "-")


def _leaf_commands(command, path=()):
    """(path, command) for every command of the app, sub-apps included."""
    subs = getattr(command, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield path, command


def _options(command):
    for param in command.params:
        if getattr(param, "param_type_name", None) == "option":
            yield param


@pytest.fixture(scope="module")
def root():
    return get_command(build_app())


def test_every_option_of_every_command_takes_both_spellings(root):
    runner = CliRunner()
    app = build_app()
    checked = 0
    for path, command in _leaf_commands(root):
        for dashed in (False, True):
            line = []
            for param in _options(command):
                flag = getattr(param, "is_flag", False)
                for opt in [*param.opts, *param.secondary_opts]:
                    if opt.startswith("--") and "_" in opt:
                        line += [_dashed(opt) if dashed else opt]
                        line += [] if flag else ["1"] * max(param.nargs, 1)
                        checked += dashed
            # --help is eager: it prints help only when the whole line parsed
            result = runner.invoke(app, [*path, *line, "--help"], env=WIDE)
            assert result.exit_code == 0, (path, line, result.output)
            assert "Usage: llm" in result.output
    assert checked >= 50  # predict, chat, serve, export, preprocess, convert, launch, kernels...


def test_help_shows_the_underscore_spelling_only(root):
    runner = CliRunner()
    app = build_app()
    for path, command in _leaf_commands(root):
        out = runner.invoke(app, [*path, "--help"], env=WIDE).output
        for param in _options(command):
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--"):
                    assert "-" not in opt[2:], (path, opt)  # canonical names have no dash
                    assert opt in out, (path, opt)
    predict = runner.invoke(app, ["predict", "--help"], env=WIDE).output
    assert "--model_name_or_path" in predict and "--model-name-or-path" not in predict


# every command that takes a model: the value reaches the loader under both spellings
MODEL_COMMANDS = {
    "predict": ["--input_file", "{tmp}/in.jsonl"],
    "chat": [],
    "serve": [],
    "export": ["--output_dir", "{tmp}/out"],
    "preprocess": ["--input_path", "{tmp}/in.jsonl", "--output_prefix", "{tmp}/corpus"],
    "quantize": ["--quant_type", "weight_only_int8", "--output_dir", "{tmp}/q"],
}


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
@pytest.mark.parametrize("spelling", ["--model_name_or_path", "--model-name-or-path"])
def test_model_option_reaches_the_loader(command, spelling, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "in.jsonl").write_text(json.dumps({"src": "hi", "text": "hi"}) + "\n")
    missing = str(tmp_path / "no-such-model")
    extra = [a.format(tmp=tmp_path) for a in MODEL_COMMANDS[command]]
    with pytest.raises(SystemExit) as exit_info:
        main([command, spelling, missing, *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "error:" in err and missing in err  # the loader was asked for that folder
    assert "Traceback" not in err and "No such option" not in err


def test_run_takes_both_spellings():
    config = build_run_config(None, ["--model-name-or-path", "ckpt", "--max-steps", "3",
                                     "--learning_rate=0.5", "--per-device-train-batch-size=2"])
    assert config.model_name_or_path == "ckpt" and config.max_steps == 3
    assert config.learning_rate == 0.5 and config.per_device_train_batch_size == 2


@pytest.mark.parametrize("spelling", ["--model_path_list", "--model-path-list"])
def test_merge_takes_both_spellings(spelling, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", spelling, "only-one", "--output-path", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "needs at least two models, got ['only-one']" in err


def test_canonical_args_leaves_values_and_passthrough_alone():
    args = ["--model-path-list", "a-b", "--no-parity", "--x=--y-z", "--", "--keep-me"]
    assert canonical_args(args, ["--model_path_list", "--no_parity"]) == [
        "--model_path_list", "a-b", "--no_parity", "--x=--y-z", "--", "--keep-me"]
    assert canonical_args(["--max-steps=3"]) == ["--max_steps=3"]


def test_merge_and_quantize_help_look_like_every_other_command():
    runner = CliRunner()
    app = build_app()
    for command, expected in (("merge", ["--model_path_list", "--base_model_path",
                                         "--lora_model_path", "--weight_list", "--output_path"]),
                              ("quantize", ["--model_name_or_path", "--quant_type",
                                            "--calibration_data", "--group_size", "--percdamp"])):
        result = runner.invoke(app, [command, "--help"], env=WIDE)
        assert result.exit_code == 0, result.output
        assert f"Usage: llm {command}" in result.output
        assert "╭─ Options" in result.output  # the same rich panels as predict/serve/...
        for opt in expected:
            assert opt in result.output, (command, opt)


def test_run_help_lists_every_core_and_plugin_option_grouped_by_plugin():
    result = CliRunner().invoke(build_app(), ["run", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    for key in CORE_KEYS:
        assert f"--{key} " in out, key
    assert "[default: 0.0003]" in out  # learning_rate's default is shown
    registry = get_plugin_manager().registry
    kinds = {"peft_method": "peft", "alignment_loss": "align", "trainer_strategy": "strategy",
             "quantizer": "quant_type", "stage": "stage"}
    listed = 0
    for kind, field in kinds.items():
        for entry in registry.entries(kind):
            cls = entry.options_class()
            if cls is None:
                continue
            panel = next(line for line in out.splitlines()
                         if f"--{field} " in line and entry.name in line and "╭─" in line)
            assert entry.distribution in panel
            for key in cls.model_fields:
                if key not in CORE_KEYS:
                    assert f"--{key} " in out, (entry.name, key)
                    listed += 1
    assert listed > 40
    # one-line help on every row
    from paddlellm.cli.run_help import run_help_options

    assert all(row.help for row in run_help_options())


def test_declared_options_match_the_plugin_config_class():
    registry = get_plugin_manager().registry
    declared = [e for e in registry.entries() if e.options is not None]
    assert {e.name for e in declared} >= {"lora", "lokr", "prefix", "vera"}
    for entry in declared:
        assert entry.options_class() is entry.load().config_class, entry.name


def test_register_without_options_still_works():
    from paddlellm.plugin.registry import Registry

    class Stage:  # a stage: a callable (the class) with a config_class
        class config_class:  # noqa: N801 - stands in for a pydantic model
            model_fields = {"k": None}

    registry = Registry()
    register = registry.register_callback("stage", "p", "dist", "1.0")
    register("m", Stage)  # the pre-`options=` signature
    register("n", Stage, options=dict)
    assert registry.get("stage", "m").options_class() is Stage.config_class
    assert registry.get("stage", "n").options_class() is dict
