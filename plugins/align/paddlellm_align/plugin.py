"""Registers the alignment losses, the rewards and the ``align`` stage (no heavy import here)."""
from paddlellm.api import hookimpl


@hookimpl
def register_alignment_losses(register):
    register("dpo", "paddlellm_align.losses:DPO", aliases=("simpo", "orpo", "ipo", "hinge"),
             description="DPO family: --loss_type sigmoid|hinge|ipo|simpo|orpo (aliases pick "
                         "the loss type)")
    register("kto", "paddlellm_align.losses:KTO",
             description="KTO on pointwise desirable/undesirable data, batch KL estimate")


@hookimpl
def register_stages(register):
    register("align", "paddlellm_align.stage:align_stage",
             description="preference alignment with the --align loss (the demo without --data: "
                         "SFT, then DPO on generated correct/wrong answers)")
    register("rm", "paddlellm_align.rm_stage:rm_stage",
             description="reward model (sequence classification, score head) trained with the "
                         "Bradley-Terry loss on preference pairs; held-out pair accuracy")
    register("grpo", "paddlellm_align.grpo_stage:grpo_stage",
             description="GRPO: groups of completions sampled through the engine, scored by "
                         "--reward, group-relative advantages, clipped objective (the demo: "
                         "exact_match on the demo questions)")
    register("ppo", "paddlellm_align.ppo_stage:ppo_stage",
             description="PPO: completions sampled through the engine, scored by --reward, "
                         "a value head on the policy, KL-penalised GAE, clipped policy and "
                         "value losses (the demo: exact_match on the demo questions)")



@hookimpl
def register_rewards(register):
    register("reward_model", "paddlellm_align.rewards:RewardModelReward",
             options="paddlellm_align.rewards:RewardModelRewardConfig",
             description="a reward-model checkpoint (sequence classification, one label) scores "
                         "prompt + completion")
    register("exact_match", "paddlellm_align.rewards:exact_match",
             description="rule: 1.0 when the completion equals the reference answer, else 0.0")
    register("http", "paddlellm_align.rewards:HTTPReward",
             options="paddlellm_align.rewards:HTTPRewardConfig",
             description="a reward server: JSON POST of prompts/completions/references, "
                         "answered by {\"rewards\": [...]}")
