"""Rewards for RLHF: one interface, three kinds of source.

A reward scores a batch of completions (:class:`paddlellm.interfaces.Reward`)::

    reward(prompts, completions, references=None) -> list[float]

``prompts`` are the user turns (strings) or conversations (lists of ``{"role", "content"}``);
``references`` (optional) the reference answers, one per completion. Rewards are plugins of
kind ``reward`` (hook ``register_rewards``); this plugin registers:

* ``reward_model``: a reward-model checkpoint (:class:`RewardModelReward`; a
  :class:`~paddlellm_align.reward_model.RewardModel` saved with its tokenizer, ours or a
  transformers ``*ForSequenceClassification`` with one label) scoring each rendered
  prompt + completion.
* ``exact_match``: a rule, 1.0 when the completion equals the reference answer (whitespace
  collapsed), else 0.0 — :func:`exact_match`. A rule is any Python function with the
  signature above; another distribution adds its own through its entry point::

      @hookimpl
      def register_rewards(register):
          register("has_answer_tag", "my_pkg.rules:has_answer_tag")

* ``http``: a reward server (:class:`HTTPReward`): one JSON ``POST`` per batch,
  ``{"prompts": [...], "completions": [...], "references": [...]}``, answered by
  ``{"rewards": [...]}``, with a bounded wait and response size.

:func:`load_reward` turns a registered name (with its options) or a Python callable into a
ready :class:`Reward`; every reward's output is checked (one finite number per completion)
and a wrong one is a :class:`RewardError` naming the reward.
"""
from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, Callable, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paddlellm.errors import ConfigError, PaddleLLMError


class RewardError(PaddleLLMError, RuntimeError):
    """A reward could not score a batch (bad output, unreachable server, missing reference)."""


def check_rewards(values: Any, count: int, name: str) -> list[float]:
    """``values`` as ``count`` finite floats, or a :class:`RewardError` naming reward ``name``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise RewardError(f"reward '{name}' returned {type(values).__name__}; expected a list "
                          f"of {count} numbers")
    values = list(values)
    if len(values) != count:
        raise RewardError(f"reward '{name}' returned {len(values)} values for {count} "
                          "completions")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
            raise RewardError(f"reward '{name}': value {i} is {v!r}, not a number")
        f = float(v)
        if not math.isfinite(f):
            raise RewardError(f"reward '{name}': value {i} is {f}, not a finite number")
        out.append(f)
    return out


def _user_messages(prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return prompt
    raise RewardError(f"a prompt is a string or a list of {{'role', 'content'}} messages, got "
                      f"{type(prompt).__name__}")


# --- rules ----------------------------------------------------------------------------------

def _normalise(text: str) -> str:
    return " ".join(text.split())


def exact_match(prompts: Sequence[Any], completions: Sequence[str],
                references: Sequence[str | None] | None = None) -> list[float]:
    """1.0 where the completion equals its reference answer (whitespace collapsed), else 0.0."""
    if references is None or any(r is None for r in references):
        raise RewardError("reward 'exact_match' needs a reference answer for every completion "
                          "(the data's answer field)")
    return [float(_normalise(c) == _normalise(r)) for c, r in zip(completions, references)]


class FunctionReward:
    """A rule: a Python function ``(prompts, completions, references) -> numbers``."""

    def __init__(self, function: Callable[..., Any], name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__name__", type(function).__name__)

    def __call__(self, prompts, completions, references=None) -> list[float]:
        if len(prompts) != len(completions):
            raise RewardError(f"reward '{self.name}': {len(prompts)} prompts for "
                              f"{len(completions)} completions")
        return check_rewards(self.function(list(prompts), list(completions),
                                           None if references is None else list(references)),
                             len(completions), self.name)


# --- reward model ---------------------------------------------------------------------------

class RewardModelRewardConfig(BaseModel):
    """Options of the ``reward_model`` reward."""

    model_config = ConfigDict(extra="forbid")

    reward_model_path: str | None = Field(None, description="directory of the reward model (a "
                                          "sequence-classification checkpoint with its "
                                          "tokenizer); the ppo demo trains one when unset")
    reward_batch_size: int = Field(16, ge=1, description="sequences per reward-model forward")
    reward_max_length: int = Field(1024, ge=2, description="longest scored sequence in tokens "
                                                           "(the prompt's start is cut first)")


class RewardModelReward:
    """Scores ``prompt + completion`` with a reward model, rendered as in its training (the
    tokenizer's chat template), in batches, without gradient."""

    name = "reward_model"
    config_class: ClassVar[type[BaseModel]] = RewardModelRewardConfig

    def __init__(self, config: RewardModelRewardConfig, model: Any = None,
                 tokenizer: Any = None) -> None:
        self.config = config
        if (model is None or tokenizer is None) and not config.reward_model_path:
            raise ConfigError("reward 'reward_model' needs reward_model_path (--reward_model_path"
                              ": a reward model saved by `llm run --stage rm`)")
        if model is None or tokenizer is None:
            from paddlellm.api import AutoTokenizer

            from .reward_model import RewardModel

            model = model or RewardModel.from_pretrained(config.reward_model_path)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(config.reward_model_path)
        self.model, self.tokenizer = model, tokenizer
        if self.model.pad_token_id is None and tokenizer.pad_token_id is not None:
            self.model.pad_token_id = tokenizer.pad_token_id

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, **options: Any) -> "RewardModelReward":
        """A reward over an in-memory :class:`~paddlellm_align.reward_model.RewardModel`."""
        config = RewardModelRewardConfig(reward_model_path=str(getattr(model, "name_or_path", "")
                                                               or "<memory>"), **options)
        return cls(config, model=model, tokenizer=tokenizer)

    def encode(self, prompt: Any, completion: str) -> list[int]:
        from .data import split_prompt_response

        prompt_ids, response_ids = split_prompt_response(self.tokenizer, _user_messages(prompt),
                                                         completion)
        ids = prompt_ids + response_ids
        limit = self.config.reward_max_length
        return ids if len(ids) <= limit else ids[-limit:]

    def __call__(self, prompts, completions, references=None) -> list[float]:
        import paddle

        from .reward_model import pad_rows

        if len(prompts) != len(completions):
            raise RewardError(f"reward 'reward_model': {len(prompts)} prompts for "
                              f"{len(completions)} completions")
        rows = [self.encode(p, c) for p, c in zip(prompts, completions)]
        pad = self.model.pad_token_id
        size = self.config.reward_batch_size if pad is not None else 1
        scores: list[float] = []
        was_training = self.model.training
        self.model.eval()
        with paddle.no_grad():
            for i in range(0, len(rows), size):
                ids, mask = pad_rows(rows[i:i + size], pad if pad is not None else 0)
                out = self.model(paddle.to_tensor(ids), paddle.to_tensor(mask))
                scores.extend(out.astype("float32").numpy().tolist())
        if was_training:
            self.model.train()
        return check_rewards(scores, len(completions), self.name)


# --- reward server --------------------------------------------------------------------------

class HTTPRewardConfig(BaseModel):
    """Options of the ``http`` reward (a reward server)."""

    model_config = ConfigDict(extra="forbid")

    reward_server_url: str = Field(description="URL the batches are POSTed to "
                                               "(http:// or https://)")
    reward_server_timeout: float = Field(60.0, gt=0, description="seconds a batch may take, "
                                                                 "connection included")
    reward_server_max_bytes: int = Field(1 << 20, ge=64, description="largest accepted "
                                                                     "response body in bytes")


class HTTPReward:
    """Scores batches on a reward server; see the module docstring for the JSON exchanged."""

    name = "http"
    config_class: ClassVar[type[BaseModel]] = HTTPRewardConfig
    _CHUNK = 65536

    def __init__(self, config: HTTPRewardConfig) -> None:
        if not config.reward_server_url.startswith(("http://", "https://")):
            raise ConfigError(f"reward_server_url must start with http:// or https://, got "
                              f"'{config.reward_server_url}'")
        self.config = config

    def __call__(self, prompts, completions, references=None) -> list[float]:
        if len(prompts) != len(completions):
            raise RewardError(f"reward 'http': {len(prompts)} prompts for {len(completions)} "
                              "completions")
        body: dict[str, Any] = {"prompts": list(prompts), "completions": list(completions)}
        if references is not None:
            body["references"] = list(references)
        answer = self._post(json.dumps(body).encode("utf-8"))
        if not isinstance(answer, dict) or "rewards" not in answer:
            keys = ", ".join(sorted(answer)) if isinstance(answer, dict) else type(answer).__name__
            raise RewardError(f"reward server {self.config.reward_server_url} answered without "
                              f"'rewards' (got {keys or 'an empty object'})")
        return check_rewards(answer["rewards"], len(completions),
                             f"http {self.config.reward_server_url}")

    def _post(self, data: bytes) -> Any:
        url, limit = self.config.reward_server_url, self.config.reward_server_max_bytes
        timeout = self.config.reward_server_timeout
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json"})
        deadline = time.monotonic() + timeout
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                chunks, size = [], 0
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    chunk = response.read(min(self._CHUNK, limit + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise RewardError(f"reward server {url} sent more than "
                                          f"{limit} bytes (reward_server_max_bytes)")
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            raise RewardError(f"reward server {url} answered HTTP {exc.code} {exc.reason}"
                              + (f": {detail}" if detail else "")) from None
        except (TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
                raise RewardError(f"reward server {url} did not answer within {timeout:g} s "
                                  "(reward_server_timeout)") from None
            raise RewardError(f"cannot reach reward server {url}: {reason}") from None
        try:
            return json.loads(b"".join(chunks).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RewardError(f"reward server {url} sent invalid JSON: {exc}") from None


# --- resolution -----------------------------------------------------------------------------

def load_reward(reward: str | Callable[..., Any], registry: Any = None, **options: Any):
    """A ready reward from a registered name (with its options) or a Python callable.

    ``load_reward("exact_match")``, ``load_reward("reward_model", reward_model_path=...)``,
    ``load_reward("http", reward_server_url=...)``, ``load_reward(my_function)``. An unknown
    name lists the installed rewards; wrong options name the valid ones.
    """
    if not isinstance(reward, str):
        if options:
            raise ConfigError(f"a reward function takes no options; got {', '.join(options)}")
        if isinstance(reward, FunctionReward):
            return reward
        return FunctionReward(reward, getattr(reward, "name", None))  # output checked
    if registry is None:
        from paddlellm.api import get_registry

        registry = get_registry()
    entry = registry.get("reward", reward)  # unknown names list the installed rewards
    target = entry.load()
    config_class = getattr(target, "config_class", None)
    if isinstance(target, type) and config_class is not None:
        try:
            config = config_class(**options)
        except ValidationError as exc:
            valid = ", ".join(config_class.model_fields)
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"reward '{entry.name}': {problems} (its options: {valid})") from None
        return target(config)
    if options:
        raise ConfigError(f"reward '{entry.name}' is a rule and takes no options; got "
                          f"{', '.join(options)}")
    if not callable(target):
        raise ConfigError(f"reward '{entry.name}' ({entry.target}) is not callable")
    return FunctionReward(target, entry.name)
