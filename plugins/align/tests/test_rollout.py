"""Per-token log-probabilities and values of a padded rollout batch equal those of each
sequence run alone (full log-softmax reference)."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddlellm import AutoModelForCausalLM
from paddlellm_align.reward_model import RewardModel
from paddlellm_align.rollout import RolloutBatch, completion_logprobs, completion_values

PROMPTS = [[5, 9, 11], [7], [3, 4, 8, 2]]
COMPLETIONS = [[12, 13], [20, 21, 22, 23], [30]]


@pytest.fixture(scope="module")
def lm():
    paddle.seed(4)
    return AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64, pad_token_id=0).eval()


def test_layout():
    batch = RolloutBatch.from_lists(PROMPTS, COMPLETIONS, pad_id=0)
    np.testing.assert_array_equal(batch.prompt_ids[1], [0, 0, 0, 7])
    np.testing.assert_array_equal(batch.completion_mask[2], [1, 0, 0, 0])
    with pytest.raises(ValueError, match="a rollout prompt is empty"):
        RolloutBatch.from_lists([[]], [[1]], pad_id=0)


def test_completion_logprobs_match_each_sequence_alone(lm):
    batch = RolloutBatch.from_lists(PROMPTS, COMPLETIONS, pad_id=0)
    logps, entropy = completion_logprobs(lm, batch, temperature=0.7, with_entropy=True)
    assert logps.shape == [3, 4]
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        logits = lm(paddle.to_tensor([p + c]))[0, len(p) - 1: len(p) - 1 + len(c)] / 0.7
        ref = F.log_softmax(logits.astype("float64"), axis=-1)
        want = ref.numpy()[np.arange(len(c)), c]
        np.testing.assert_allclose(logps.numpy()[i, :len(c)], want, rtol=1e-5, atol=1e-5)
        probs = np.exp(ref.numpy())
        np.testing.assert_allclose(entropy.numpy()[i, :len(c)], -(probs * ref.numpy()).sum(-1),
                                   rtol=1e-5, atol=1e-5)


def test_completion_values_match_each_sequence_alone(lm):
    value = RewardModel.from_causal_lm(
        AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64, pad_token_id=0),
        seed=1).eval()
    batch = RolloutBatch.from_lists(PROMPTS, COMPLETIONS, pad_id=0)
    values = completion_values(value, batch)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        alone = value.token_scores(paddle.to_tensor([p + c]))[0, len(p) - 1: len(p) - 1 + len(c)]
        np.testing.assert_allclose(values.numpy()[i, :len(c)], alone.numpy(), rtol=1e-5, atol=1e-6)
        # the last token's value is what the reward model scores on the full sequence
    full = value(paddle.to_tensor([PROMPTS[0] + COMPLETIONS[0]]))
    last = value.token_scores(paddle.to_tensor([PROMPTS[0] + COMPLETIONS[0]]))[0, -1]
    np.testing.assert_allclose(float(full[0]), float(last), rtol=1e-6)


def test_grpo_steps_on_rule_rewards_raise_the_right_answers():
    """The parts compose: demo questions, sampled-like completions scored by exact_match,
    group advantages, a few GRPO steps -> the wrong answers' log-probs fall, well below the
    right ones'."""
    from paddlellm import AutoTokenizer
    from paddlellm.modeling.prepare import INSTRUCT_DEMO_MODEL
    from paddlellm_align.data import split_prompt_response
    from paddlellm_align.demo import demo_preferences
    from paddlellm_align.rewards import load_reward
    from paddlellm_align.rl_losses import GRPOConfig, group_advantages, grpo_loss

    paddle.seed(0)
    tokenizer = AutoTokenizer.from_pretrained(INSTRUCT_DEMO_MODEL)
    policy = AutoModelForCausalLM.from_pretrained(INSTRUCT_DEMO_MODEL)
    records = [r for r in demo_preferences(40, seed=3) if r["task"] in ("next", "count")][:3]
    prompts, completions, references, prompt_ids, completion_ids = [], [], [], [], []
    for r in records:  # a group of 4 "samples" per question: its right and wrong answers
        for answer in (r["answer"], *r["response"], r["answer"]):
            messages = [{"role": "user", "content": r["src"][0]}]
            p, c = split_prompt_response(tokenizer, messages, answer)
            prompts.append(r["src"][0]), completions.append(answer), references.append(r["answer"])
            prompt_ids.append(p), completion_ids.append(c)
    rewards = load_reward("exact_match")(prompts, completions, references)
    advantages, _ = group_advantages(paddle.to_tensor(rewards), num_generations=4)
    batch = RolloutBatch.from_lists(prompt_ids, completion_ids, tokenizer.pad_token_id)
    mask = batch.mask()
    right = np.asarray(rewards) == 1.0

    def seq_logps():
        with paddle.no_grad():
            return (completion_logprobs(policy, batch) * mask).sum(axis=1).numpy()

    before = seq_logps()
    opt = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=policy.parameters())
    with paddle.no_grad():
        old = completion_logprobs(policy, batch)
    config = GRPOConfig(loss_type="grpo")
    for _ in range(4):  # num_iterations: several updates on one rollout (ratio != 1, clipping)
        loss, stats = grpo_loss(completion_logprobs(policy, batch), advantages, mask, config,
                                old_logprobs=old)
        loss.backward()
        opt.step()
        opt.clear_grad()
    after = seq_logps()
    change = after - before
    print("log-prob change of right / wrong answers:", change[right].mean(), change[~right].mean())
    assert change[~right].mean() < 0
    assert change[right].mean() - change[~right].mean() > 0.5  # the margin opens


def test_ppo_epochs_on_one_rollout_fit_the_values_and_favour_high_scores(lm):
    """Policy + value head (a RewardModel) on one rollout: per-token KL reward, GAE, a few
    PPO epochs -> the value loss falls, and the higher-scored completion gains log-prob
    against the lower-scored one of the same prompt."""
    from paddlellm_align.rl_losses import PPOConfig, ppo_advantages, ppo_loss

    paddle.seed(5)
    policy = AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64, pad_token_id=0)
    reference = AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64, pad_token_id=0)
    reference.set_state_dict(policy.state_dict())
    value_head = RewardModel.from_causal_lm(
        AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64, pad_token_id=0), seed=2)
    prompts = [[5, 9, 11], [5, 9, 11], [7, 3], [7, 3]]
    completions = [[12, 13, 2], [40, 41, 2], [20, 21, 22, 2], [50, 2]]
    scores = paddle.to_tensor([1.0, -1.0, 1.0, -1.0])
    batch = RolloutBatch.from_lists(prompts, completions, pad_id=0)
    mask = batch.mask()
    config = PPOConfig(kl_coef=0.05, cliprange=0.2, vf_coef=0.5)
    with paddle.no_grad():
        old = completion_logprobs(policy, batch)
        ref = completion_logprobs(reference, batch)
        old_values = completion_values(value_head, batch)
    rollout = ppo_advantages(old, ref, old_values, scores, mask, config)
    assert rollout.stats["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # same weights
    params = policy.parameters() + value_head.parameters()
    opt = paddle.optimizer.AdamW(learning_rate=3e-3, parameters=params)
    value_losses = []
    for _ in range(6):  # PPO epochs over the rollout (one mini-batch)
        loss, stats = ppo_loss(completion_logprobs(policy, batch), old, rollout.advantages,
                               rollout.returns, completion_values(value_head, batch),
                               rollout.values, mask, config)
        loss.backward()
        opt.step()
        opt.clear_grad()
        value_losses.append(stats["loss/value"])
    with paddle.no_grad():
        gain = ((completion_logprobs(policy, batch) - old) * mask).sum(axis=1).numpy()
    assert value_losses[-1] < value_losses[0]
    assert gain[0] > gain[1] and gain[2] > gain[3]
