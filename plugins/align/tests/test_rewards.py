"""Rewards as plugins: the registered kind, rules, a reward-model checkpoint, a reward server."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from paddlellm import AutoModelForCausalLM, AutoTokenizer, hookimpl
from paddlellm.errors import ConfigError, UnknownPluginError
from paddlellm.interfaces import Reward
from paddlellm.modeling.prepare import INSTRUCT_DEMO_MODEL
from paddlellm.plugin.manager import PluginManager, get_registry
from paddlellm_align.reward_model import RewardModel
from paddlellm_align.rewards import (FunctionReward, HTTPReward, RewardError,
                                     RewardModelReward, exact_match, load_reward)


def test_builtin_rewards_are_registered_as_kind_reward():
    registry = get_registry()
    assert {"reward_model", "exact_match", "http"} <= set(registry.names("reward"))
    entry = registry.get("reward", "http")
    assert entry.distribution == "paddlellm-align"
    assert "reward_server_url" in entry.options_class().model_fields
    with pytest.raises(UnknownPluginError, match="unknown reward 'exact_mach'; did you mean "
                                                 "'exact_match'"):
        load_reward("exact_mach")


def test_exact_match_rule():
    reward = load_reward("exact_match")
    assert isinstance(reward, Reward)
    assert reward(["q1", "q2", "q3"], [" d  e f", "7", "red"], ["d e f", "8", "red"]) == [1.0, 0.0, 1.0]
    with pytest.raises(RewardError, match="'exact_match' needs a reference answer"):
        reward(["q"], ["a"])
    with pytest.raises(ConfigError, match="is a rule and takes no options; got beta"):
        load_reward("exact_match", beta=1)


def test_a_third_party_rule_registers_through_the_hook():
    class RulePlugin:
        @hookimpl
        def register_rewards(register):  # noqa: N805 - a hook module's function
            register("answer_length", lambda p, c, r: [len(x) for x in c],
                     description="completion length")

    manager = PluginManager()
    manager.register(RulePlugin, "rules", "my-rules", "1.0")
    reward = load_reward("answer_length", registry=manager.registry)
    assert reward.name == "answer_length"
    assert reward(["a", "b"], ["xyz", ""]) == [3.0, 0.0]


def test_reward_output_is_checked_and_errors_name_the_reward():
    with pytest.raises(RewardError, match="reward 'bad' returned 1 values for 2 completions"):
        FunctionReward(lambda p, c, r: [1.0], "bad")(["a", "b"], ["x", "y"])
    with pytest.raises(RewardError, match="reward 'nan': value 0 is nan, not a finite number"):
        FunctionReward(lambda p, c, r: [float("nan")], "nan")(["a"], ["x"])
    with pytest.raises(RewardError, match="value 1 is 'high', not a number"):
        load_reward(lambda p, c, r: [1, "high"])(["a", "b"], ["x", "y"])


def test_reward_model_checkpoint_scores_like_the_model(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(INSTRUCT_DEMO_MODEL)
    paddle.seed(1)
    model = RewardModel.from_causal_lm(AutoModelForCausalLM.from_pretrained(INSTRUCT_DEMO_MODEL),
                                       pad_token_id=tokenizer.pad_token_id, seed=2)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reward = load_reward("reward_model", reward_model_path=str(tmp_path), reward_batch_size=2)
    assert isinstance(reward, RewardModelReward)
    prompts = ["count the letters: a b c", "what comes after d?", "the colour of the sky?"]
    completions = ["3", "e", "blue"]
    batched = reward(prompts, completions)
    single = [reward([p], [c])[0] for p, c in zip(prompts, completions)]
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)  # padding changes nothing
    model.eval()
    ids = paddle.to_tensor([reward.encode(prompts[1], completions[1])])
    assert batched[1] == pytest.approx(float(model(ids)[0]), rel=1e-5, abs=1e-6)
    with pytest.raises(ConfigError, match=r"reward 'reward_model' needs reward_model_path "
                                          r"\(--reward_model_path: a reward model saved by "
                                          r"`llm run --stage rm`\)"):
        load_reward("reward_model")


def test_http_reward_posts_json_and_reads_rewards(server):
    srv = server(lambda body: (200, json.dumps({"rewards": [len(c) * 0.5 for c in
                                                            body["completions"]]}).encode(), 0))
    reward = load_reward("http", reward_server_url=srv.url)
    assert isinstance(reward, HTTPReward)
    assert reward(["q1", "q2"], ["ab", "abcd"], ["x", "y"]) == [1.0, 2.0]
    assert srv.requests == [{"prompts": ["q1", "q2"], "completions": ["ab", "abcd"],
                             "references": ["x", "y"]}]


def test_http_reward_errors_are_clear(server):
    bad_status = server(lambda body: (503, b"overloaded", 0))
    with pytest.raises(RewardError, match="answered HTTP 503 .*: overloaded"):
        load_reward("http", reward_server_url=bad_status.url)(["q"], ["a"])
    slow = server(lambda body: (200, b'{"rewards": [1]}', 2.0))
    with pytest.raises(RewardError, match="did not answer within 0.3 s"):
        load_reward("http", reward_server_url=slow.url, reward_server_timeout=0.3)(["q"], ["a"])
    huge = server(lambda body: (200, json.dumps({"rewards": [0.0] * 5000}).encode(), 0))
    with pytest.raises(RewardError, match="sent more than 1024 bytes"):
        load_reward("http", reward_server_url=huge.url, reward_server_max_bytes=1024)(["q"], ["a"])
    wrong = server(lambda body: (200, b'{"scores": [1]}', 0))
    with pytest.raises(RewardError, match="answered without 'rewards' \\(got scores\\)"):
        load_reward("http", reward_server_url=wrong.url)(["q"], ["a"])
    garbage = server(lambda body: (200, b"<html>", 0))
    with pytest.raises(RewardError, match="sent invalid JSON"):
        load_reward("http", reward_server_url=garbage.url)(["q"], ["a"])
    closed = bad_status.url.rsplit(":", 1)[0] + ":1/reward"
    with pytest.raises(RewardError, match="cannot reach reward server http://127.0.0.1:1/reward"):
        load_reward("http", reward_server_url=closed)(["q"], ["a"])
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        load_reward("http", reward_server_url="ftp://example")
