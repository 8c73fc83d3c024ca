"""ReFT (LoReFT) as a PEFT method: wrap chosen decoder layers in :class:`ReftLayer`.

``peft`` has no ReFT format (pyreft saves one torch file per intervention), so paddlellm
writes its own, in the layout of peft's adapters:

* ``adapter_config.json``: ``{"peft_type": "REFT", "task_type": "CAUSAL_LM",
  "intervention_type": "LoreftIntervention", "reft_rank": 4, "reft_layers": [0, 1, ...],
  "reft_positions": "f7+l7", "reft_dropout": 0.0, "hidden_size": H, "num_layers": L,
  "base_model_name_or_path": ...}``;
* ``adapter_model.safetensors``: per intervened layer ``i`` the float32 tensors
  ``reft.layers.<i>.rotate_layer`` ``(r, H)`` (R, orthonormal rows),
  ``reft.layers.<i>.learned_source.weight`` ``(r, H)`` (W) and
  ``reft.layers.<i>.learned_source.bias`` ``(r,)`` (b).

ReFT does not merge: the edit is applied to hidden states at chosen prompt positions only,
it is not a weight update (``merge`` raises, so ``llm export --merge-adapter`` says so).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..common import AdapterError, assign, base_model_name, read_adapter, write_adapter
from .config import ReftConfig
from .layer import (LEAVES, LoreftIntervention, PromptPositions, ReftLayer, parse_layers,
                    parse_positions)

PEFT_TYPE = "REFT"
INTERVENTION = "LoreftIntervention"
IGNORE_INDEX = -100


def _decoder_layers(model):
    layers = getattr(getattr(model, "model", None), "layers", None)
    config = getattr(model, "config", None)
    if layers is None or config is None:
        raise AdapterError(f"{type(model).__name__} has no decoder layers (model.model.layers); "
                           "ReFT needs a paddlellm decoder (CausalLM)")
    return layers, config


def reft_layers(model) -> dict[int, ReftLayer]:
    layers = getattr(getattr(model, "model", None), "layers", None) or []
    return {i: layer for i, layer in enumerate(layers) if isinstance(layer, ReftLayer)}


def _key(index: int, leaf: str) -> str:
    return f"reft.layers.{index}.{leaf}"


def _param(intervention: LoreftIntervention, leaf: str):
    return getattr(intervention, leaf.replace(".", "_"))


def prompt_lengths(batch: dict) -> np.ndarray:
    """``(B,)`` real tokens before each row's first label (0: no prompt, the whole row)."""
    labels = np.asarray(batch["labels"])
    mask = np.asarray(batch.get("attention_mask", np.ones_like(labels)))
    mask = mask[:, -labels.shape[1]:]
    target = labels != IGNORE_INDEX
    first = np.where(target.any(axis=1), target.argmax(axis=1), 0)
    return np.array([int(mask[i, :first[i]].sum()) for i in range(len(labels))], dtype=np.int64)


class Reft:
    """The ``reft`` PEFT method."""

    name = "reft"
    label = "ReFT"
    peft_type = PEFT_TYPE
    config_class = ReftConfig

    def _install(self, model, indices: list[int], *, rank: int, first: int, last: int,
                 dropout: float, seed: int) -> None:
        layers, config = _decoder_layers(model)
        context = PromptPositions()
        dtype = str(model.dtype).replace("paddle.", "") if hasattr(model, "dtype") else "float32"
        for i in indices:
            intervention = LoreftIntervention(config.hidden_size, rank, dropout=dropout,
                                              seed=seed + i, dtype=dtype)
            layers[i] = ReftLayer(layers[i], intervention, first=first, last=last,
                                  context=context)
        model.reft_context = context
        model.reft_positions = f"f{first}+l{last}"

    def apply(self, model, config: ReftConfig | None = None):
        config = config or ReftConfig()
        layers, c = _decoder_layers(model)
        if reft_layers(model):
            raise AdapterError("this model already has ReFT interventions")
        try:
            first, last = parse_positions(config.reft_positions)
            indices = parse_layers(config.reft_layers, len(layers))
            self._install(model, indices, rank=config.reft_rank, first=first, last=last,
                          dropout=config.reft_dropout, seed=config.reft_seed)
        except ValueError as exc:
            raise AdapterError(str(exc)) from None
        return model

    @contextlib.contextmanager
    def batch_context(self, model, batch: dict):
        """Around a training/eval forward: where each row's prompt ends (its first label)."""
        import paddle

        context = getattr(model, "reft_context", None)
        if context is None or "labels" not in batch:
            yield
            return
        context.prompt_lengths = paddle.to_tensor(prompt_lengths(batch))
        try:
            yield
        finally:
            context.prompt_lengths = None

    # -- format ----------------------------------------------------------------------------
    def adapter_config(self, model) -> dict:
        found = reft_layers(model)
        if not found:
            raise AdapterError("this model has no ReFT interventions")
        first = next(iter(found.values()))
        return {"peft_type": PEFT_TYPE, "task_type": "CAUSAL_LM",
                "base_model_name_or_path": base_model_name(model),
                "intervention_type": INTERVENTION, "reft_rank": first.intervention.rank,
                "reft_layers": sorted(found), "reft_positions": f"f{first.first}+l{first.last}",
                "reft_dropout": first.intervention.reft_dropout,
                "hidden_size": int(model.config.hidden_size),
                "num_layers": int(model.config.num_layers)}

    def adapter_state(self, model) -> dict[str, np.ndarray]:
        import paddle

        state = {}
        with paddle.no_grad():
            for i, layer in reft_layers(model).items():
                iv = layer.intervention
                state[_key(i, "rotate_layer")] = iv.rotation().astype("float32").numpy()
                for leaf in LEAVES[1:]:
                    state[_key(i, leaf)] = _param(iv, leaf).astype("float32").numpy()
        return state

    def save_adapter(self, model, directory: str) -> None:
        write_adapter(directory, self.adapter_config(model), self.adapter_state(model))

    def load_adapter(self, model, directory: str):
        """Add the saved interventions (plain model) or fill the model's (a resumed run)."""
        config, tensors = read_adapter(directory)
        where = Path(directory) / "adapter_config.json"
        if config.get("peft_type") != PEFT_TYPE:
            raise AdapterError(f"{where}: peft_type is {config.get('peft_type')!r}, not "
                               f"{PEFT_TYPE!r}")
        if config.get("intervention_type", INTERVENTION) != INTERVENTION:
            raise AdapterError(f"{where}: intervention_type {config['intervention_type']!r} is "
                               f"not supported (only {INTERVENTION})")
        layers, c = _decoder_layers(model)
        for key, want in (("hidden_size", c.hidden_size), ("num_layers", len(layers))):
            if config.get(key) != want:
                raise AdapterError(f"{where}: {key} = {config.get(key)!r} does not fit this "
                                   f"model ({key} = {want})")
        indices = config.get("reft_layers")
        rank = config.get("reft_rank")
        if (not isinstance(indices, list) or not indices
                or not all(isinstance(i, int) and 0 <= i < len(layers) for i in indices)):
            raise AdapterError(f"{where}: reft_layers must be a list of layer indices "
                               f"0..{len(layers) - 1}, got {indices!r}")
        if not isinstance(rank, int) or rank <= 0:
            raise AdapterError(f"{where}: reft_rank must be a positive integer, got {rank!r}")
        try:
            first, last = parse_positions(config.get("reft_positions", ""))
        except ValueError as exc:
            raise AdapterError(f"{where}: {exc}") from None
        expected = {_key(i, leaf) for i in indices for leaf in LEAVES}
        if set(tensors) != expected:
            odd = sorted(set(tensors) ^ expected)[:3]
            raise AdapterError(f"{Path(directory) / 'adapter_model.safetensors'}: tensors do "
                               f"not match reft_layers {indices} (e.g. {odd})")
        existing = reft_layers(model)
        if existing:
            if sorted(existing) != sorted(indices):
                raise AdapterError(f"{where}: reft_layers {indices} differ from the model's "
                                   f"interventions {sorted(existing)}")
        else:
            self._install(model, sorted(indices), rank=rank, first=first, last=last,
                          dropout=float(config.get("reft_dropout", 0.0)), seed=0)
            existing = reft_layers(model)
        for i, layer in existing.items():
            for leaf in LEAVES:
                assign(_param(layer.intervention, leaf), tensors[_key(i, leaf)], _key(i, leaf))
        return model

    def merge(self, model, unload: bool = True):
        if not reft_layers(model):
            raise AdapterError("this model has no ReFT interventions")
        raise AdapterError("ReFT cannot be merged into the base weights: its intervention "
                           "edits hidden states at chosen prompt positions, it is not a weight "
                           "update. Use it unmerged: `llm predict --prefix_path DIR` (model."
                           "generate with any unmergeable adapter) or AutoModelForCausalLM."
                           "from_pretrained(base, lora_path=DIR)")

    def unmerge(self, model):
        return self.merge(model)

    def remove(self, model):
        """Put the plain decoder layers back; the model is the base model again."""
        layers, _ = _decoder_layers(model)
        for i, layer in reft_layers(model).items():
            layers[i] = layer.base_layer
        model.reft_context = None
        return model


METHOD = Reft()
