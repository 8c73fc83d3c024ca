"""What the RLHF stages (``ppo``, ``grpo``) share: rollouts through the engine, the reward,
the reference model, the held-out evaluation and the options of generation.

Rollouts run on :class:`paddlellm.api.LLMEngine` built once around the policy being trained
(``LLMEngine.for_model``: its live parameters, LoRA layers unmerged, no second copy): paged
KV cache and continuous batching over all the step's prompts × samples. Every sample has its
own seed, a function of ``(--seed, batch index, sample)``, so a resumed run draws exactly
the completions the uninterrupted one drew.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from paddlellm.errors import ConfigError

from .prompts import PromptRecord, encode_prompt


class GenerationOptions(BaseModel):
    """Sampling of the rollouts (trl's names)."""

    model_config = ConfigDict(extra="forbid")

    max_completion_length: int = Field(256, ge=1, description="longest sampled completion in "
                                       "tokens")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the rollouts "
                               "(the log-probs of the loss use it too)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the rollouts")
    top_k: int = Field(0, ge=0, description="top-k sampling of the rollouts (0: off)")


def sample_seed(seed: int, batch_index: int, sample: int) -> int:
    """The sampling seed of one completion: distinct per (run seed, batch, sample)."""
    return (seed * 1_000_003 + batch_index * 100_003 + sample) % (2**63)


@dataclass
class Completions:
    """Sampled completions: token ids (with the final end-of-sequence token when one was
    generated, as trained on) and text (without it)."""

    token_ids: list[list[int]]
    texts: list[str]


class Rollouts:
    """Generation with the policy's current weights through one engine built around it."""

    def __init__(self, model: Any, tokenizer: Any, max_model_len: int, max_num_seqs: int = 64
                 ) -> None:
        from paddlellm.api import LLMEngine

        self.model, self.tokenizer = model, tokenizer
        was_training = model.training
        self.engine = LLMEngine.for_model(model, tokenizer, max_model_len=max_model_len,
                                          max_num_seqs=max_num_seqs)
        if was_training:
            model.train()
        self.sampling_seconds = 0.0  # time spent sampling rollouts (not greedy evaluation)

    def generate(self, prompts: Sequence[list[int]], options: GenerationOptions, *,
                 greedy: bool = False, seeds: Sequence[int] | None = None) -> Completions:
        """One completion per prompt (repeat a prompt for several samples)."""
        from paddlellm.api import SamplingParams

        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            if greedy:
                params: Any = SamplingParams(max_tokens=options.max_completion_length,
                                             temperature=0)
            else:
                params = [SamplingParams(max_tokens=options.max_completion_length,
                                         temperature=options.temperature, top_p=options.top_p,
                                         top_k=options.top_k, seed=int(s)) for s in seeds]
            out = self.engine.generate(list(prompts), params)
        finally:
            if was_training:
                self.model.train()
        if not greedy:
            self.sampling_seconds += time.perf_counter() - start
        return Completions([o["token_ids"] for o in out], [o["text"].strip() for o in out])


def score(reward: Any, records: Sequence[PromptRecord], texts: Sequence[str]) -> list[float]:
    """The reward of each completion (references passed when every record has one)."""
    refs = [r.answer for r in records]
    return reward([r.prompt for r in records], list(texts),
                  refs if all(a is not None for a in refs) else None)


def load_run_reward(session: Any, default: str | None = None) -> tuple[Any, str]:
    """The reward ``--reward`` names, built with its options (``default`` when unset)."""
    from .rewards import load_reward

    name = session.config.reward or default
    if name is None:
        raise ConfigError(f"the {session.config.stage} stage needs a reward: --reward "
                          "exact_match|reward_model|http|<a registered reward> (see `llm "
                          "plugins --kind reward`)")
    options = session.config.plugin_options.get("reward")  # as recorded by the run
    values = options.model_dump() if options is not None else {}
    return load_reward(name, session.ctx.registry, **values), name


class Reference:
    """Per-token reference log-probs without gradient: the policy with its adapters disabled
    (``--peft``), else a frozen copy of the starting weights."""

    def __init__(self, session: Any) -> None:
        from paddlellm.api import unwrap

        self.policy, self.copy = session.model, None
        if not session.config.peft:
            frozen = (session.starting_model() if session.resume_dir is not None
                      else copy.deepcopy(unwrap(session.model)))
            frozen.eval()
            for p in frozen.parameters():
                p.stop_gradient = True
            self.copy = frozen
        self.kind = "frozen copy" if self.copy is not None else "adapters disabled"

    def logprobs(self, batch: Any, temperature: float):
        import paddle

        from paddlellm.api import disable_adapters

        from .rollout import completion_logprobs

        with paddle.no_grad():
            if self.copy is not None:
                return completion_logprobs(self.copy, batch, temperature).detach()
            with disable_adapters(self.policy):
                return completion_logprobs(self.policy, batch, temperature).detach()


def evaluate_greedy(rollouts: Rollouts, reward: Any, records: Sequence[PromptRecord],
                    prompt_ids: Sequence[list[int]], options: GenerationOptions) -> dict:
    """Held-out greedy completions: mean reward, exact match (when every record has an
    answer), completion length, per task for the demo, and a few samples."""
    out = rollouts.generate(prompt_ids, options, greedy=True)
    rewards = score(reward, records, out.texts)
    metrics: dict[str, Any] = {"eval_reward": float(np.mean(rewards)),
                               "eval_completion_length": float(np.mean(
                                   [len(t) for t in out.token_ids]))}
    if all(r.answer is not None for r in records):
        hits = [" ".join(t.split()) == " ".join(r.answer.split())
                for t, r in zip(out.texts, records)]
        metrics["exact_match"] = float(np.mean(hits))
        by_task: dict[str, list[bool]] = {}
        for hit, r in zip(hits, records):
            if r.task:
                by_task.setdefault(r.task, []).append(hit)
        if by_task:
            metrics["by_task"] = {k: float(np.mean(v)) for k, v in sorted(by_task.items())}
    metrics["samples"] = [{"prompt": r.prompt, "completion": t, "reward": s}
                          for r, t, s in list(zip(records, out.texts, rewards))[:3]]
    return metrics


class StepTimer:
    """The rollout share of step time: seconds spent sampling rollouts over the wall time of
    training since the first micro-step (forward, backward, optimizer and reward included)."""

    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts, self.first, self.generation0 = rollouts, None, 0.0

    def tick(self) -> float | None:
        """Call at the start of each micro-step: the share so far (None on the first)."""
        now = time.perf_counter()
        if self.first is None:
            self.first, self.generation0 = now, self.rollouts.sampling_seconds
            return None
        return (self.rollouts.sampling_seconds - self.generation0) / max(now - self.first, 1e-9)

    def total(self) -> float | None:
        return self.tick() if self.first is not None else None


def encode_all(tokenizer: Any, records: Sequence[PromptRecord], max_prompt_length: int
               ) -> tuple[list[list[int]], int]:
    """The prompts' token ids, each cut at the start to ``max_prompt_length``, and how many
    were cut."""
    full = [encode_prompt(tokenizer, r) for r in records]
    return [ids[-max_prompt_length:] for ids in full], sum(len(ids) > max_prompt_length for ids in full)


def prompt_stream(count: int, size: int, seed: int, shard, accumulation: int = 1,
                  repeat: int = 1):
    """Endless micro-batches of ``size`` prompt indices, reshuffled every epoch, as
    ``{"group", "part", "parts", "iteration"}``: a generation group is ``accumulation``
    micro-batches, sampled together at its first micro-step and given ``repeat`` times in a
    row (``iteration`` 0 to ``repeat - 1``: GRPO's ``num_iterations``, PPO's epochs)."""
    import itertools

    def chunks():
        for epoch in itertools.count():
            order = np.random.default_rng(seed + epoch).permutation(count)
            parts = [order[i:i + size].tolist() for i in range(0, count - size + 1, size)]
            for i in shard(list(range(len(parts)))):
                yield parts[i]

    source, group = chunks(), 0
    while True:
        parts = [next(source) for _ in range(accumulation)]
        for r in range(repeat):
            for j in range(accumulation):
                yield {"group": group, "part": j, "parts": parts, "iteration": r}
        group += 1
