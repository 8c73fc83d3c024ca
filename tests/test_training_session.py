"""The training session every stage shares: demo configuration, data sources, step counts.

The stages built on it (pretrain, sft, align) are tested end to end in test_run.py,
test_sft_run.py, test_resume.py and the align plugin's tests; a complete third-party stage
runs in docs/plugins.md ("Writing a stage", executed by test_docs.py).
"""
from __future__ import annotations

import pytest

from paddlellm.plugin.config import RunConfig
from paddlellm.errors import ConfigError
from paddlellm.modeling.prepare import DEMO_MODEL_DIR
from paddlellm.plugin.manager import get_plugin_manager
from paddlellm.training.compose import compose
from paddlellm.training import Demo, TrainingSession


def context(tmp_path, **values):
    return compose(RunConfig(output_dir=str(tmp_path / "out"), **values), get_plugin_manager())


def test_demo_defaults_fill_only_unset_options_and_are_recorded(tmp_path):
    ctx = context(tmp_path, learning_rate=1e-3)
    demo = Demo(lambda session: ("demo data", session.config.max_length),
                defaults={"learning_rate": 5e-3, "max_length": 64})
    session = TrainingSession(ctx, demo=demo)
    assert session.is_demo and session.demo_defaults == {"max_length": 64}
    assert session.config.learning_rate == 1e-3 and session.config.max_length == 64
    assert ctx.used_config.max_length == 64  # what run_config.json records
    assert session.data(lambda s: pytest.fail("no --data: the demo's source")) == ("demo data", 64)
    assert session.source == str(DEMO_MODEL_DIR)  # --model qwen: the bundled demo model


def test_with_data_the_stage_reader_is_used_and_demo_defaults_are_not(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("")
    ctx = context(tmp_path, data=str(data))
    session = TrainingSession(ctx, demo=Demo(lambda s: pytest.fail("demo"), {"max_length": 64}))
    assert not session.is_demo and session.config.max_length == RunConfig().max_length
    assert ctx.used_config is None
    assert session.data(lambda s: s.config.data) == str(data)


def test_a_stage_without_a_demo_needs_data(tmp_path):
    session = TrainingSession(context(tmp_path, stage="pretrain"))
    with pytest.raises(ConfigError, match="the pretrain stage needs --data"):
        session.data(lambda s: None)


def test_total_steps_from_max_steps_or_epochs(tmp_path):
    assert TrainingSession(context(tmp_path, max_steps=7)).total_steps(100) == 7
    session = TrainingSession(context(tmp_path, num_train_epochs=1.5,
                                      gradient_accumulation_steps=2))
    assert session.total_steps(10) == 8  # ceil(1.5 * 10 / 2)
    assert session.total_steps(10, batches_per_step=1) == 15
    assert session.total_steps(0) == 1  # never zero steps


def test_demo_options_apply_to_plugin_options_only_in_the_demo(tmp_path):
    from pydantic import BaseModel

    class LossOptions(BaseModel):
        beta: float = 0.1
        ratio: float = 0.0

    ctx = context(tmp_path)
    session = TrainingSession(ctx, demo=Demo(lambda s: None, {}))
    opts = session.demo_options("alignment_loss", LossOptions(beta=0.5),
                                {"beta": 0.2, "ratio": 1.0, "absent": 3})
    assert (opts.beta, opts.ratio) == (0.5, 1.0)  # the user's beta wins; no unknown field
    assert session.demo_defaults == {"ratio": 1.0}
    assert ctx.used_config.plugin_options["alignment_loss"] is opts
