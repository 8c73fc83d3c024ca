"""Reward models: a causal LM's decoder with a scalar ``score`` head, trained on preferences.

:class:`RewardModel` is what transformers calls ``*ForSequenceClassification`` with
``num_labels=1``: the final hidden state of each sequence's last non-padding token (the
rightmost token that is not ``pad_token_id``, so left and right padding both work) goes
through ``score``, a bias-free ``Linear(hidden, 1)``. It works on every registered family
(the decoder is the family's own model without its LM head).

Saved in the Hugging Face layout of a sequence-classification model, so
``transformers.AutoModelForSequenceClassification.from_pretrained`` loads it and scores
equally (``plugins/align/tests/test_reward_model.py``): the decoder's tensors under the
family's names, ``score.weight`` ``(1, hidden)``, and a ``config.json`` with
``architectures: ["Qwen2ForSequenceClassification"]`` (the family's causal-LM class with
``ForSequenceClassification``), ``id2label``/``label2id`` of one label and ``pad_token_id``.

Training is the Bradley–Terry pairwise loss of trl's ``RewardTrainer``
(:func:`pairwise_reward_loss`): ``-log σ(r_chosen - r_rejected - margin)``, plus
``center_rewards_coefficient · mean((r_c + r_r)²)`` when set (Eisenstein et al. 2023), on the
preference jsonl the DPO stage reads (:func:`encode_preferences`); evaluation is held-out pair
accuracy, the share of pairs where the chosen response scores strictly higher.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import paddle
import paddle.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from paddlellm.api import (CheckpointFormatError, CheckpointReader, assign_array, family_config,
                           read_model_config, save_state_dict)

SEQ_CLS_SUFFIX = "ForSequenceClassification"
GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


class RewardLossConfig(BaseModel):
    """Options of the Bradley–Terry loss (trl's ``RewardConfig`` names)."""

    model_config = ConfigDict(extra="forbid")

    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="weight of mean((r_chosen + r_rejected)^2), which keeps rewards "
                                "centred on zero (trl; 0.01 is the paper's value)")


def pairwise_reward_loss(chosen, rejected, config: RewardLossConfig | None = None, margin=None
                         ) -> tuple[Any, dict[str, float]]:
    """Bradley–Terry loss of ``(P,)`` chosen and rejected rewards: ``(loss, metrics)``.

    ``margin``: optional ``(P,)`` per-pair margins (how much better the chosen is). Metrics as
    trl's ``RewardTrainer``: ``accuracy`` (chosen strictly above rejected), ``margin``
    (mean difference), ``mean_reward``, ``min_reward``, ``max_reward``.
    """
    import paddle.nn.functional as F

    config = config or RewardLossConfig()
    diff = chosen - rejected  # (P,)
    if margin is not None:
        diff = diff - margin.astype(diff.dtype)
    loss = -F.log_sigmoid(diff).mean()
    if config.center_rewards_coefficient is not None:
        total = chosen + rejected
        loss = loss + config.center_rewards_coefficient * (total * total).mean()
    with paddle.no_grad():
        both = paddle.concat([chosen, rejected])
        metrics = {"accuracy": float((chosen > rejected).astype("float32").mean()),
                   "margin": float((chosen - rejected).mean()),
                   "mean_reward": float(both.mean()), "min_reward": float(both.min()),
                   "max_reward": float(both.max())}
    return loss, metrics


# --- the model ------------------------------------------------------------------------------

def _linear_names(layer: nn.Layer) -> set[str]:
    return {f"{n}.weight" for n, sub in layer.named_sublayers() if isinstance(sub, nn.Linear)}


def sequence_classification_architecture(causal_lm_architecture: str) -> str:
    """``Qwen2ForCausalLM`` -> ``Qwen2ForSequenceClassification`` (``GPT2LMHeadModel`` ->
    ``GPT2ForSequenceClassification``)."""
    for suffix in ("ForCausalLM", "LMHeadModel"):
        if causal_lm_architecture.endswith(suffix):
            return causal_lm_architecture[: -len(suffix)] + SEQ_CLS_SUFFIX
    raise ValueError(f"cannot name the sequence-classification class of architecture "
                     f"'{causal_lm_architecture}' (expected a name ending in ForCausalLM)")


class RewardModel(nn.Layer):
    """``model(input_ids, attention_mask) -> (B,)`` rewards; see the module docstring.

    Build one with :meth:`from_causal_lm` (a fresh ``score`` head on a loaded LM) or
    :meth:`from_pretrained` (a saved reward model, ours or transformers').
    """

    def __init__(self, backbone: nn.Layer, pad_token_id: int | None = None) -> None:
        super().__init__()
        if hasattr(backbone, "lm_head"):  # a reward model has no vocabulary projection
            del backbone.lm_head
        self.backbone = backbone
        config = backbone.config
        self.pad_token_id = pad_token_id if pad_token_id is not None else config.pad_token_id
        self._project_out = hasattr(backbone.model, "project_out")
        width = (config.embed_proj_dim or config.hidden_size) if self._project_out else config.hidden_size
        self.score = nn.Linear(width, 1, bias_attr=False)  # weight (H, 1)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_causal_lm(cls, model: nn.Layer, pad_token_id: int | None = None,
                       seed: int | None = None) -> "RewardModel":
        """A reward model on ``model``'s decoder (``model`` is taken over: its LM head is
        dropped), with ``score`` drawn from ``N(0, initializer_range²)`` as transformers."""
        reward_model = cls(model, pad_token_id)
        std = getattr(model.config, "initializer_range", 0.02)
        rng = np.random.default_rng(seed)
        weight = rng.normal(0.0, std, size=reward_model.score.weight.shape)
        assign_array(reward_model.score.weight, weight.astype("float32"), "score.weight")
        reward_model.name_or_path = getattr(model, "name_or_path", None)
        return reward_model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str = "float32") -> "RewardModel":
        """Load a sequence-classification checkpoint with one label (what :meth:`save_pretrained`
        or transformers' ``AutoModelForSequenceClassification`` with ``num_labels=1`` writes)."""
        from paddlellm.api import family_for_model_type

        path = Path(path)
        hf = read_model_config(path)  # checked: errors name config.json and the field
        architectures = hf.get("architectures") or []
        if not any(str(a).endswith(SEQ_CLS_SUFFIX) for a in architectures):
            raise CheckpointFormatError(
                f"{path / 'config.json'}: architectures {architectures} name no "
                f"*{SEQ_CLS_SUFFIX} model; a reward model is a sequence-classification "
                "checkpoint (build one from a causal LM with RewardModel.from_causal_lm)")
        labels = len(hf.get("id2label") or {"0": "LABEL_0"})
        if hf.get("num_labels", labels) != 1 or labels != 1:
            raise CheckpointFormatError(f"{path / 'config.json'}: a reward model has one label "
                                        f"(num_labels 1), this one has {labels}")
        family = family_for_model_type(hf["model_type"], hf, path / "config.json")
        config = family_config(family, path)
        backbone = family.build(config, dtype=dtype, init=False)
        model = cls(backbone, hf.get("pad_token_id"))
        params = dict(model.backbone.named_parameters())
        linear = _linear_names(model.backbone)
        loaded: set[str] = set()
        with CheckpointReader(path) as reader:
            for key in reader.keys():
                array = reader.get_numpy(key, dtype="float32")
                if key == "score.weight":
                    if array.shape != (1, model.score.weight.shape[0]):
                        raise CheckpointFormatError(
                            f"{path}: score.weight has shape {list(array.shape)}, expected "
                            f"[1, {model.score.weight.shape[0]}]")
                    assign_array(model.score.weight, array.T, "score.weight")
                    loaded.add("score.weight")
                    continue
                if family.is_ignored(key) or key == "lm_head.weight":
                    continue
                for name, value in family.from_hf_tensor(key, array, config):
                    if name not in params:
                        raise CheckpointFormatError(f"{path}: tensor '{key}' maps to '{name}', "
                                                    f"which a {family.name} reward model lacks")
                    assign_array(params[name], value.T if name in linear else value, name)
                    loaded.add(name)
        missing = sorted(set(params) - loaded) + ([] if "score.weight" in loaded else ["score.weight"])
        if missing:
            raise CheckpointFormatError(f"the reward model at {path} lacks {len(missing)} "
                                        f"tensors, e.g. {', '.join(missing[:5])}")
        model.name_or_path = str(path.resolve())
        model.eval()
        return model

    # -- forward ---------------------------------------------------------------------------
    def last_token_index(self, input_ids: paddle.Tensor) -> paddle.Tensor:
        """``(B,)`` index of each row's rightmost token that is not ``pad_token_id``."""
        b, t = input_ids.shape
        if self.pad_token_id is None:
            if b != 1:
                raise ValueError("a reward model without pad_token_id scores one sequence at a "
                                 "time; pass pad_token_id (the tokenizer's) to batch")
            return paddle.full([1], t - 1, dtype="int64")
        not_pad = (input_ids != self.pad_token_id).astype("int64")
        return (paddle.arange(t, dtype="int64").unsqueeze(0) * not_pad).argmax(axis=-1)

    def hidden_states(self, input_ids: paddle.Tensor, attention_mask=None) -> paddle.Tensor:
        """``(B, T, H)`` decoder outputs the ``score`` head reads."""
        hidden = self.backbone.forward_hidden(input_ids, attention_mask)  # (B, T, H)
        return self.backbone.model.project_out(hidden) if self._project_out else hidden

    def token_scores(self, input_ids, attention_mask=None) -> paddle.Tensor:
        """``(B, T)`` the head's output at every position (a PPO value head's values)."""
        hidden = self.hidden_states(input_ids, attention_mask)
        weight = self.score.weight
        if weight.dtype != hidden.dtype:
            weight = weight.astype(hidden.dtype)
        return paddle.matmul(hidden, weight).squeeze(-1)

    def forward(self, input_ids, attention_mask=None) -> paddle.Tensor:
        """``(B,)`` rewards of ``(B, T)`` token ids (``attention_mask`` 1 on tokens)."""
        if not isinstance(input_ids, paddle.Tensor):
            input_ids = paddle.to_tensor(np.asarray(input_ids), dtype="int64")
        if attention_mask is not None and not isinstance(attention_mask, paddle.Tensor):
            attention_mask = paddle.to_tensor(np.asarray(attention_mask), dtype="int64")
        hidden = self.hidden_states(input_ids, attention_mask)  # (B, T, H)
        b, _, h = hidden.shape
        last = self.last_token_index(input_ids)  # (B,)
        index = last.reshape([b, 1, 1]).expand([b, 1, h])
        pooled = paddle.take_along_axis(hidden, index, axis=1).squeeze(1)  # (B, H)
        weight = self.score.weight
        if weight.dtype != pooled.dtype:
            weight = weight.astype(pooled.dtype)
        return paddle.matmul(pooled, weight).squeeze(-1)  # (B,)

    # -- saving ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, *, max_shard_size: str = "5GB",
                        dtype: str | None = None) -> list[str]:
        """Write the sequence-classification checkpoint transformers loads (see the module)."""
        backbone = self.backbone
        family, config = backbone.family, backbone.config
        dtype = dtype or str(self.score.weight.dtype).replace("paddle.", "")
        linear = _linear_names(backbone)
        state = {}
        for name, p in backbone.named_parameters():
            array = p.astype("float32").numpy()
            state[name] = np.ascontiguousarray(array.T) if name in linear else array
        tensors: dict[str, Any] = {}
        for group in family.save_groups(list(state), config):
            tensors.update(family.to_hf_state({n: state[n] for n in group}, config))
        tensors.pop("lm_head.weight", None)
        tensors["score.weight"] = np.ascontiguousarray(self.score.weight.astype("float32").numpy().T)
        if dtype != "float32":
            tensors = {k: paddle.to_tensor(v).astype(dtype) for k, v in tensors.items()}
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = save_state_dict(tensors, directory, max_shard_size=max_shard_size,
                                metadata={"format": "pt"})
        hf = family.config_to_hf(config)
        hf["architectures"] = [sequence_classification_architecture(a)
                               for a in hf.get("architectures") or [family.architecture]]
        hf.update({"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
                   "pad_token_id": self.pad_token_id, "dtype": dtype, "torch_dtype": dtype})
        (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
        gen = {k: getattr(config, k) for k in GENERATION_KEYS if getattr(config, k, None) is not None}
        if self.pad_token_id is not None:
            gen["pad_token_id"] = self.pad_token_id
        (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        return [str(f) for f in files]


# --- data and evaluation --------------------------------------------------------------------

def encode_preferences(tokenizer, records: Sequence[Any], max_length: int
                       ) -> list[tuple[list[int], list[int]]]:
    """``(chosen ids, rejected ids)`` of pairwise :class:`~paddlellm_align.data.PreferenceRecord`
    s: the prompt rendered as SFT and DPO render it, then each response; sequences longer than
    ``max_length`` keep the prompt's end. A response whose ids end in ``pad_token_id`` would
    be scored at an earlier token (the pad rule transformers uses), so that is an error."""
    from .data import tokenize_records

    pairs = []
    pad = tokenizer.pad_token_id
    for ex in tokenize_records(tokenizer, records, max_length):
        if ex.rejected is None:
            raise ValueError("reward-model training needs pairwise records (two responses "
                             "with different 'sort'); got a pointwise one")
        chosen, rejected = ex.prompt + ex.chosen, ex.prompt + ex.rejected
        if pad is not None and pad in (chosen[-1], rejected[-1]):
            raise ValueError(f"a rendered response ends in the padding token ({pad}); pick a "
                             "tokenizer whose pad token differs from its end-of-turn token")
        pairs.append((chosen, rejected))
    return pairs


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(B, T)`` int64 ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask


def score_pairs(model: RewardModel, pairs: Sequence[tuple[list[int], list[int]]]
                ) -> tuple[paddle.Tensor, paddle.Tensor]:
    """``(P,)`` chosen and rejected rewards of ``pairs`` in one forward (chosen rows first,
    as trl's collator); gradients flow when enabled."""
    if model.pad_token_id is None:
        raise ValueError("score_pairs batches sequences: the reward model needs a pad_token_id")
    ids, mask = pad_rows([c for c, _ in pairs] + [r for _, r in pairs], model.pad_token_id)
    rewards = model(paddle.to_tensor(ids), paddle.to_tensor(mask))  # (2P,)
    return rewards[: len(pairs)], rewards[len(pairs):]


def pair_accuracy(model: RewardModel, pairs: Sequence[tuple[list[int], list[int]]],
                  batch_size: int = 16) -> dict[str, float]:
    """Held-out evaluation: ``accuracy`` (chosen strictly above rejected), mean ``margin`` and
    the mean Bradley–Terry ``loss`` over ``pairs``."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    with paddle.no_grad():
        for i in range(0, len(pairs), batch_size):
            c, r = score_pairs(model, pairs[i:i + batch_size])
            chosen.append(c.astype("float64").numpy())
            rejected.append(r.astype("float64").numpy())
    if was_training:
        model.train()
    c, r = np.concatenate(chosen), np.concatenate(rejected)
    diff = c - r
    return {"accuracy": float((diff > 0).mean()), "margin": float(diff.mean()),
            "loss": float(np.mean(np.logaddexp(0.0, -diff)))}
