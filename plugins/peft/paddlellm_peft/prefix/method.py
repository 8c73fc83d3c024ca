"""Prefix tuning as a PEFT method: attach a :class:`PrefixEncoder` to the decoder's
``prefix_kv`` hook; save/load peft's ``PREFIX_TUNING`` adapters.

peft's format: ``adapter_config.json`` (``num_virtual_tokens``, ``token_dim`` = kv heads x
head dim, ``num_attention_heads`` = kv heads, ``num_layers``, ``prefix_projection``,
``encoder_hidden_size``) and ``adapter_model.safetensors`` with one tensor,
``prompt_embeddings`` ``(P, num_layers * 2 * token_dim)``: the prefix after the projection MLP.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from paddlellm.api import CheckpointReader

from ..common import AdapterError, assign, base_model_name, read_adapter, write_adapter
from .config import PrefixConfig
from .layer import PrefixEncoder

PEFT_TYPE = "PREFIX_TUNING"
#: the projection MLP of a prefix trained with ``prefix_projection`` (not read by peft)
ENCODER_FILE = "prefix_encoder.safetensors"


def _check_model(model) -> None:
    if not hasattr(model, "prefix_kv"):
        raise TypeError(f"{type(model).__name__} has no prefix_kv hook; prefix tuning needs a "
                        "paddlellm decoder (CausalLM)")
    if model.prefix_kv is not None:
        raise ValueError("this model already has a prefix (prefix tuning is applied once)")


def find_encoder(model) -> PrefixEncoder:
    encoder = getattr(model, "prefix_kv", None)
    if not isinstance(encoder, PrefixEncoder):
        raise AdapterError("this model has no prefix-tuning adapter")
    return encoder


def _attach(model, encoder: PrefixEncoder) -> None:
    dtype = model.dtype
    if dtype != "float32":
        encoder.to(dtype=dtype)
    model.prefix_kv = encoder  # a sublayer: its parameters are the model's


class PrefixTuning:
    """The ``prefix`` PEFT method."""

    name = "prefix"
    peft_type = PEFT_TYPE
    config_class = PrefixConfig

    def apply(self, model, config: PrefixConfig | None = None):
        """Freeze the model and attach a fresh trainable prefix."""
        config = config or PrefixConfig()
        _check_model(model)
        c = model.config
        for p in model.parameters():
            p.stop_gradient = True
        encoder = PrefixEncoder(config.num_prefix_tokens, c.num_layers, c.num_kv_heads,
                                c.head_dim, projection=config.prefix_projection,
                                projection_hidden_size=config.prefix_projection_hidden_size)
        _attach(model, encoder)
        return model

    # -- peft format -----------------------------------------------------------------------
    def adapter_config(self, model) -> dict[str, Any]:
        e = find_encoder(model)
        return {
            "peft_type": PEFT_TYPE, "task_type": "CAUSAL_LM", "auto_mapping": None,
            "base_model_name_or_path": base_model_name(model), "revision": None,
            "inference_mode": True,
            "num_virtual_tokens": e.num_tokens, "token_dim": e.token_dim,
            "num_attention_heads": e.kv_heads, "num_layers": e.num_layers,
            "num_transformer_submodules": 1, "modules_to_save": None, "init_weights": None,
            "prefix_projection": e.projection, "encoder_hidden_size": e.hidden_size or e.token_dim,
        }

    def adapter_state(self, model) -> dict[str, np.ndarray]:
        """peft's tensors: ``{"prompt_embeddings": (P, L * 2 * token_dim)}`` in float32."""
        import paddle

        with paddle.no_grad():
            table = find_encoder(model).prompt_embeddings()
        return {"prompt_embeddings": table.astype("float32").numpy()}

    def save_adapter(self, model, directory: str) -> None:
        """peft's files; with ``prefix_projection`` also ``prefix_encoder.safetensors`` (the
        embedding and MLP, which peft does not keep) so that a training run resumes."""
        from paddlellm.api import save_state_dict

        encoder = find_encoder(model)
        write_adapter(directory, self.adapter_config(model), self.adapter_state(model))
        if encoder.projection:
            state = {k: v.astype("float32").numpy() for k, v in encoder.state_dict().items()}
            save_state_dict(state, directory, prefix=ENCODER_FILE.split(".")[0],
                            max_shard_size=2**62)

    def load_adapter(self, model, directory: str):
        """Attach the saved prefix (trainable, without the MLP) to a plain model, or load it
        into the model's prefix (a resumed run; with the MLP when it was saved)."""
        config, tensors = read_adapter(directory)
        where = Path(directory) / "adapter_config.json"
        if config.get("peft_type") != PEFT_TYPE:
            raise AdapterError(f"{where}: peft_type is {config.get('peft_type')!r}, not "
                               f"{PEFT_TYPE!r}")
        c = model.config
        expected = {"num_layers": c.num_layers, "num_attention_heads": c.num_kv_heads,
                    "token_dim": c.num_kv_heads * c.head_dim, "num_transformer_submodules": 1}
        for key, want in expected.items():
            if config.get(key, 1 if key == "num_transformer_submodules" else None) != want:
                raise AdapterError(f"{where}: {key} = {config.get(key)} does not fit this model "
                                   f"({key} = {want}; token_dim is kv heads x head dim)")
        if "prompt_embeddings" not in tensors:
            raise AdapterError(f"{Path(directory) / 'adapter_model.safetensors'}: no "
                               f"'prompt_embeddings' tensor (found: "
                               f"{', '.join(sorted(tensors)) or 'none'})")
        table = tensors["prompt_embeddings"]  # (P, L * 2 * token_dim)
        encoder = getattr(model, "prefix_kv", None)
        mlp_file = Path(directory) / ENCODER_FILE
        if isinstance(encoder, PrefixEncoder):  # resume: same shapes, same parameterisation
            if encoder.num_tokens != int(config["num_virtual_tokens"]):
                raise AdapterError(f"{where}: num_virtual_tokens = {config['num_virtual_tokens']}"
                                   f", the model's prefix has {encoder.num_tokens}")
            if not encoder.projection:
                encoder.load_prompt_embeddings(table)
                return model
            if mlp_file.is_file():
                with CheckpointReader(mlp_file) as reader:
                    for name, param in encoder.state_dict().items():
                        assign(param, reader.get_numpy(name, dtype="float32"), name)
                return model
            model.prefix_kv = None  # only the projected prefix was saved: train that
        else:
            _check_model(model)
        for p in model.parameters():
            p.stop_gradient = True
        encoder = PrefixEncoder(int(config["num_virtual_tokens"]), c.num_layers, c.num_kv_heads,
                                c.head_dim)
        encoder.load_prompt_embeddings(table)
        _attach(model, encoder)
        return model

    def merge(self, model, unload: bool = True):
        find_encoder(model)
        raise AdapterError("prefix tuning cannot be merged into the base weights: the prefix is "
                         "extra keys/values, not a weight update. Load the adapter with "
                         "from_pretrained(base, prefix_path=DIR) instead")

    def remove(self, model):
        """Detach the prefix; the model is the base model again."""
        find_encoder(model)
        model.prefix_kv = None
        return model

    def unmerge(self, model):
        return self.merge(model)


METHOD = PrefixTuning()
