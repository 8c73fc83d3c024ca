"""What each kind of plugin provides: one :class:`typing.Protocol` per kind.

Plugins depend on these and on the rest of the core's public API, never on each other;
cross-plugin references are by registered name. Tensors are ``paddle.Tensor`` unless said
otherwise; nothing here imports Paddle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import paddle
    from pydantic import BaseModel


# --- hardware ------------------------------------------------------------------------------

@runtime_checkable
class Backend(Protocol):
    """A hardware backend: owns device selection and its Paddle build.

    ``is_available`` may import Paddle; it is only called when a run needs a device.
    """

    name: str
    #: higher wins when ``--device`` is not given
    priority: int
    #: the Paddle device type this backend drives ("cpu", "gpu", "xpu", ...)
    device_type: str

    def is_available(self) -> bool: ...

    def unavailable_reason(self) -> str:
        """Why ``is_available()`` is false, with what to install; ``""`` when available."""

    def device_count(self) -> int: ...

    def setup(self, device_index: int = 0) -> str:
        """Make this backend current (``paddle.set_device``, threads); return the device string."""

    def supports_dtype(self, dtype: str, training: bool = False) -> bool:
        """Whether ``dtype`` ("float32", "bfloat16", "float16") runs here (for training)."""

    def info(self) -> dict[str, Any]:
        """Facts for ``llm doctor``: build, devices, versions."""


# --- attention -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionSpec:
    """What one kind of attention call needs; kernels answer ``supports(spec)``."""

    dtype: str = "float32"
    head_dim: int = 64
    causal: bool = True
    padding_mask: bool = False  # an ``attention_mask`` over keys is passed
    sliding_window: bool = False
    alibi: bool = False
    segments: bool = False  # block-diagonal masks for packed sequences
    softcap: bool = False  # tanh soft-capping of scores (Gemma 2)
    cache: str = "none"  # "none" | "contiguous" | "paged"
    training: bool = False  # gradients must flow through the kernel


@runtime_checkable
class AttentionKernel(Protocol):
    """Scaled dot-product attention with the masks decoder LLMs use.

    Layout and semantics (every kernel must honour them):

    * ``q``: ``(B, Tq, Hq, D)``; ``k``, ``v``: ``(B, Tk, Hkv, D)`` with ``Hq % Hkv == 0``
      (grouped/multi-query heads: query head ``h`` reads kv head ``h // (Hq // Hkv)``).
      Output: ``(B, Tq, Hq, D)`` in ``q``'s dtype.
    * With ``cache`` (a :class:`KVCacheLayer`), ``k``/``v`` are the new keys; the kernel
      appends them and attends over the whole cache; ``Tk`` below is the length after the
      append. A cache with ``paged = True`` is a :class:`PagedKVCacheLayer` (spec
      ``cache="paged"``): many sequences in one flattened row, see there.
    * Queries are the last ``Tq`` of the ``Tk`` key positions: query ``i`` sits at key index
      ``p_i = Tk - Tq + i``.
    * ``causal``: key ``j`` is visible to query ``i`` iff ``j <= p_i``.
    * ``attention_mask``: ``(B, Tk)``, 1/True for real tokens, 0 for padding keys.
    * ``sliding_window=W``: additionally ``p_i - j < W`` (Mistral's convention).
    * ``alibi_slopes``: ``(Hq,)``; adds ``slope_h * (j - p_i)`` to the scores (equal under
      softmax to Bloom's ``slope_h * position_j``).
    * ``segment_ids``: ``(B, Tk)`` ints; key ``j`` visible to query ``i`` only when both are in
      the same segment (packed sequences, block-diagonal attention).
    * ``scale`` defaults to ``D ** -0.5``; ``softcap=c`` applies ``c * tanh(s / c)`` to scores.
    * A query that can see no key returns zeros.
    """

    name: str
    #: backend names this kernel runs on, or ``("*",)``
    backends: tuple[str, ...]
    priority: int

    def supports(self, spec: AttentionSpec) -> bool: ...

    def __call__(
        self,
        q: "paddle.Tensor",
        k: "paddle.Tensor",
        v: "paddle.Tensor",
        *,
        causal: bool = True,
        attention_mask: "paddle.Tensor | None" = None,
        sliding_window: int | None = None,
        alibi_slopes: "paddle.Tensor | None" = None,
        segment_ids: "paddle.Tensor | None" = None,
        scale: float | None = None,
        softcap: float | None = None,
        cache: "KVCacheLayer | None" = None,
    ) -> "paddle.Tensor": ...


def kernel_runs_on(kernel: AttentionKernel, backend: str) -> bool:
    """Whether ``kernel`` lists ``backend`` (or ``"*"``) in its ``backends``."""
    return "*" in kernel.backends or backend in kernel.backends


@runtime_checkable
class KVCacheLayer(Protocol):
    """The key/value cache of one attention layer."""

    def update(self, k: "paddle.Tensor", v: "paddle.Tensor") -> tuple["paddle.Tensor", "paddle.Tensor"]:
        """Append ``(B, T, Hkv, D)`` keys/values; return all cached ``(B, Tk, Hkv, D)``."""

    def __len__(self) -> int:
        """Number of cached positions."""


@runtime_checkable
class PagedKVCacheLayer(Protocol):
    """One layer's view of a paged (block) KV cache for one batched call (``cache="paged"``).

    The serving engine runs prefill and decode of many sequences of different lengths as
    **one** forward call: the new tokens of ``S`` sequences are concatenated into one row,
    ``input_ids``/``position_ids`` ``(1, N)``, so the kernel gets ``q`` ``(1, N, Hq, D)`` and
    ``k``, ``v`` ``(1, N, Hkv, D)`` and returns ``(1, N, Hq, D)``. Sequence ``s`` owns the
    tokens ``query_start[s] : query_start[s] + query_lens[s]`` of that row.

    * ``key_pool``, ``value_pool``: ``(num_blocks * block_size, Hkv, D)``, the layer's pool of
      slots; slot ``b * block_size + o`` is offset ``o`` of block ``b``.
    * ``slot_mapping``: ``(N,)`` int64, the slot where each new key/value is written (the
      kernel writes them before attending).
    * ``block_tables``: ``(S, max_blocks)`` int64, sequence ``s``'s token ``t`` lives in
      slot ``block_tables[s, t // block_size] * block_size + t % block_size`` (unused
      entries are 0).
    * ``context_lens``: ``(S,)`` keys of each sequence after this call's write (cached +
      new), also as the host list ``context_lens_host``; ``query_lens``/``query_start``
      ``(S,)`` host lists, with ``max_query_len`` and ``max_context_len``.
    * Query ``i`` of sequence ``s`` sits at key position
      ``p = context_lens[s] - query_lens[s] + i`` and sees keys ``j <= p`` of its own
      sequence (plus ``sliding_window``, ``alibi_slopes`` and ``softcap`` as for dense calls;
      ``attention_mask`` and ``segment_ids`` do not apply and must be None).
    * ``scratch``: a dict shared by every layer of the call, where a kernel keeps the index
      and mask tensors it derives from the metadata (built by the first layer, reused by the
      rest), so nothing is rebuilt per layer.
    * ``paged`` is True; ``len(layer)`` is the total number of keys (sum of context_lens).
    * Optional ``gather_kv(index) -> (k, v)``: a pool stored in another format (int8 KV
      with scales) returns the dequantized ``(len(index), Hkv, D)`` rows of pool slots
      ``index``; kernels call it, when present, instead of indexing the pools.
    """

    paged: bool
    block_size: int
    key_pool: "paddle.Tensor"
    value_pool: "paddle.Tensor"
    slot_mapping: "paddle.Tensor"
    block_tables: "paddle.Tensor"
    context_lens: "paddle.Tensor"
    context_lens_host: list[int]
    query_lens: list[int]
    query_start: list[int]
    max_query_len: int
    max_context_len: int
    scratch: dict

    def write(self, k: "paddle.Tensor", v: "paddle.Tensor") -> None:
        """Store ``(1, N, Hkv, D)`` new keys/values at ``slot_mapping``."""


# --- training ------------------------------------------------------------------------------

@runtime_checkable
class TrainerStrategy(Protocol):
    """How a run spreads over devices (single, data/tensor/pipeline parallel, sharding)."""

    name: str

    def setup(self, backend: Backend) -> None:
        """Initialise communication (if any) after the backend is set up."""

    @property
    def world_size(self) -> int: ...

    @property
    def rank(self) -> int: ...

    @property
    def is_main_process(self) -> bool: ...

    def wrap_model(self, model: "paddle.nn.Layer") -> "paddle.nn.Layer": ...

    def wrap_optimizer(self, optimizer: Any) -> Any: ...

    def shard(self, items: list) -> list:
        """The part of a list of examples (or indices) this process consumes."""

    def all_reduce_mean(self, value: float) -> float:
        """Average a Python scalar (a metric) over processes."""

    def barrier(self) -> None: ...


# --- models ---------------------------------------------------------------------------------

@runtime_checkable
class ModelFamily(Protocol):
    """A model family: a config adapter, a weight-name map and the blocks that differ."""

    name: str
    #: Hugging Face ``model_type`` values this family loads
    model_types: tuple[str, ...]
    #: preset name -> config overrides (sizes), e.g. ``{"qwen2.5-0.5b": {...}}``
    presets: Mapping[str, Mapping[str, Any]]

    def config_from_hf(self, hf_config: Mapping[str, Any]) -> Any: ...

    def config_to_hf(self, config: Any) -> dict[str, Any]: ...

    def build(self, config: Any) -> "paddle.nn.Layer": ...


# --- fine-tuning, alignment -----------------------------------------------------------------

@runtime_checkable
class PeftMethod(Protocol):
    """A parameter-efficient method: replaces modules of a built model.

    Used through :mod:`paddlellm.peft` (``apply_peft``, ``save_adapter``, ``load_adapter``,
    ``merge_adapter``, ``disable_adapters``), which freezes the base parameters before
    ``apply`` (new adapter parameters stay trainable) and records ``model.peft_method``.

    * ``peft_type``: the ``peft_type`` of ``adapter_config.json`` this method writes and
      reads (peft's ``LORA``, ``PREFIX_TUNING``, ``LOKR``, ``VERA``); ``load_adapter`` picks
      the method by it.
    * Adapters are saved in the ``peft`` format: ``adapter_config.json`` +
      ``adapter_model.safetensors`` with peft's key names (``base_model.model.<HF module
      path>.lora_A.weight``, torch layout); helpers in ``paddlellm_peft.common``.
    * ``load_adapter`` on a plain model adds the layers; on a model that already carries
      this method's layers (a resumed run) it loads the weights into them.
    * **Adapter layers honour** ``adapter_enabled``: every layer a method adds has a boolean
      attribute ``adapter_enabled`` (default ``True``); while it is ``False`` the layer
      computes exactly its base output. ``disable_adapters`` flips it (DPO's reference
      model without a second weight copy).
    * Before wrapping a base layer, a method calls the firstresult hook
      ``wrap_base_layer_for_adapter(layer=, adapter_name=, method=)`` and wraps the
      returned layer when it is not ``None`` (QLoRA: a quantized base).
    * ``merge`` folds the adapters into the base weights and returns plain layers; methods
      that can also undo an in-place merge provide ``unmerge(model)``.
    * Optional ``batch_context(model, batch)``: a context manager the training/evaluation
      loss enters around the forward of ``batch`` (``paddlellm.peft.batch_context``), for
      adapters that need more than the input ids (ReFT: where each prompt ends).
    """

    name: str
    peft_type: str
    config_class: ClassVar[type["BaseModel"]]

    def apply(self, model: "paddle.nn.Layer", config: "BaseModel") -> "paddle.nn.Layer": ...

    def save_adapter(self, model: "paddle.nn.Layer", directory: str) -> None: ...

    def load_adapter(self, model: "paddle.nn.Layer", directory: str) -> "paddle.nn.Layer": ...

    def merge(self, model: "paddle.nn.Layer") -> "paddle.nn.Layer": ...


@runtime_checkable
class AlignmentLoss(Protocol):
    """A preference loss on sequence log-probabilities."""

    name: str
    config_class: ClassVar[type["BaseModel"]]
    #: False for reference-free losses (SimPO, ORPO)
    needs_reference: bool

    def __call__(self, batch: Mapping[str, "paddle.Tensor"], config: "BaseModel") -> tuple["paddle.Tensor", dict[str, float]]:
        """Loss and metrics from policy (and reference) log-probabilities in ``batch``."""


@runtime_checkable
class Reward(Protocol):
    """Scores completions for RLHF (PPO, GRPO): one number per completion, higher is better.

    ``prompts``: the user turns (strings) or conversations (lists of ``{"role", "content"}``);
    ``completions``: the sampled answers; ``references``: optional reference answers, one per
    completion (rules such as exact match need them). Registered as a rule function with this
    signature, or as a class whose ``config_class`` options build such an object (a reward
    model checkpoint, a reward server); see ``paddlellm_align.rewards.load_reward``.
    """

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str],
                 references: Sequence[str | None] | None = None) -> list[float]: ...


# --- merging, quantization ------------------------------------------------------------------

@runtime_checkable
class MergeMethod(Protocol):
    """Merges one tensor at a time, so that merges stream shard by shard."""

    name: str
    #: whether the method needs ``base`` (task-vector methods)
    needs_base: bool

    def merge_tensor(self, name: str, tensors: list["np.ndarray"], base: "np.ndarray | None",
                     params: Mapping[str, Any]) -> "np.ndarray": ...


@runtime_checkable
class Quantizer(Protocol):
    """Turns a float model into a quantized one (and loads quantized checkpoints).

    Registered under each ``quant_type`` it handles. A quantized model carries
    ``model.quantization_config`` (a JSON-able dict with at least ``quant_type``) and its
    ``save_pretrained`` writes that dict into ``config.json``. ``AutoModelForCausalLM
    .from_pretrained`` sees it there and calls :meth:`load_pretrained` of the quantizer
    registered for that ``quant_type``.
    """

    name: str
    #: ``--quant_type`` values handled
    quant_types: tuple[str, ...]
    #: whether :meth:`quantize` needs calibration batches (GPTQ, AWQ, static activation scales)
    needs_calibration: bool
    #: optional pydantic model of the options (``group_size`` ...): flat keys of ``llm
    #: quantize`` and of ``llm run --quant_type``
    config_class: ClassVar[type["BaseModel"]]

    def quantize(self, model: "paddle.nn.Layer", quant_type: str,
                 calibration: Iterable[Any] | None, config: Mapping[str, Any]) -> "paddle.nn.Layer":
        """Quantize ``model`` in place and return it; ``calibration`` is an iterable of token-id
        batches ``(B, T)`` (int64 NumPy arrays) or None; ``config`` the options."""

    def prepare_for_loading(self, model: "paddle.nn.Layer",
                            quantization_config: Mapping[str, Any]) -> "paddle.nn.Layer":
        """Replace layers of a freshly built, uninitialised float model by empty quantized ones
        as described by ``quantization_config``, so the checkpoint's tensors load into them."""

    def load_pretrained(self, family: ModelFamily, path: str, quantization_config: Mapping[str, Any],
                        dtype: str = "float32") -> "paddle.nn.Layer":
        """Build ``family``'s model for the checkpoint at ``path``, prepare it and load it."""
