"""What each kind of plugin provides: one :class:`typing.Protocol` per kind.

Plugins depend on these and on the rest of the core's public API (:mod:`paddlellm.api`), never
on each other; cross-plugin references are by registered name. Tensors are ``paddle.Tensor``
unless said otherwise; nothing here imports Paddle.

The members declared in a Protocol's body are **required**: when the registry loads a plugin's
target it checks them (:func:`paddlellm.kinds.check_target`) and names the missing ones.
Members listed by :func:`optional_members` may be left out; the core then uses the default
given there. Which Protocol each kind follows is :data:`paddlellm.kinds.KIND_TABLE`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import paddle
    from pydantic import BaseModel


_OPTIONAL: dict[type, dict[str, Any]] = {}


def optional(**defaults: Any):
    """Class decorator: declare members a plugin may leave out, with the default the core uses.

    (Kept outside the class body so that ``isinstance(obj, Protocol)`` does not require them.)"""

    def mark(protocol: type) -> type:
        _OPTIONAL.setdefault(protocol, {}).update(defaults)
        return protocol

    return mark


def optional_members(protocol: type) -> dict[str, Any]:
    """The optional members of ``protocol`` and the defaults the core applies when absent."""
    return dict(_OPTIONAL.get(protocol, {}))


def member(obj: Any, protocol: type, name: str) -> Any:
    """``obj.name``, or the default :func:`optional_members` declares for it."""
    return getattr(obj, name, optional_members(protocol)[name])


# --- hardware ------------------------------------------------------------------------------

@optional(device_type=None)
@runtime_checkable
class Backend(Protocol):
    """A hardware backend: owns device selection and its Paddle build.

    ``is_available`` may import Paddle; it is only called when a run needs a device.
    Optional: ``device_type``, the Paddle device type it drives ("cpu", "gpu", "xpu", ...).
    The ``priority`` that ``--device auto`` compares is the one given to ``register``.
    """

    name: str

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
    prefix: bool = False  # prefix-LM context (GLM): ``context_keys`` / paged ``prefix_lens``
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
    * The bidirectional context of a prefix-LM (GLM; spec ``prefix=True``; keywords passed
      only when set, so kernels that do not take them must answer ``supports`` False):
      ``context_keys`` ``(B, Tk)`` bool for dense calls -- a marked key is also visible to
      every query of its row (``attention_mask``/``segment_ids`` still apply); for paged
      calls ``prefix_lens``, a host list with one int per sequence -- its keys
      ``j < prefix_lens[s]`` are visible to all its queries.
    * A query that can see no key returns zeros.

    Optional: ``decoder_layer(x, weights, biases, cos, sin, *, cache, eps, num_heads, scale,
    softcap, sliding_window) -> Tensor | None`` -- a whole pre-norm decoder layer of the Llama
    shape for a paged inference call of a few rows (``x`` ``(1, N, H)``; ``weights`` [input
    RMSNorm, Wq, Wk, Wv, Wo (``(in, out)``), post-attention RMSNorm, Wgate, Wup, Wdown];
    ``biases`` [bq, bk, bv, bo] or None each; ``cos``/``sin`` ``(N, D)`` rotate-half tables
    with ``sin`` signed ``[-s, s]``; the new keys/values go into ``cache``). The models
    plugin asks for it only for layers that are exactly that shape (no adapters or quantized
    projections); ``None`` declines and the layer runs its own modules.
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


# --- linear kernels ------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearSpec:
    """What one kind of linear layer needs; kernels answer ``supports(spec)``.

    ``bits`` 8 and 4 are the weight-only quantized layers; ``bits=32`` is a float32 weight (a
    model's own linear layers and output head, asked about at inference), with
    ``transposed`` telling its layout: ``(in, out)`` as ``nn.Linear`` keeps it, or ``(out,
    in)`` (an embedding table used as the tied output head)."""

    bits: int = 8  # 8: int8 ``(out, in)``; 4: two signed nibbles per byte ``(out, ceil(in/2))``;
    # 32: float32
    group_size: int = -1  # -1: one scale per output channel, else columns per scale group
    dtype: str = "float32"  # the activations' (and scales') dtype
    in_features: int = 0
    out_features: int = 0
    transposed: bool = False  # bits=32 only: the weight is (out, in)


@runtime_checkable
class WeightOnlyLinearKernel(Protocol):
    """``y = x @ dequant(qweight, scales).T`` for weight-only quantized linear layers.

    Storage is the quant plugin's (see ``paddlellm_quant.layers``): ``qweight`` int8
    ``(out, in)`` for 8 bits, uint8 ``(out, ceil(in / 2))`` for 4 bits (input column ``2j`` in
    the low nibble, ``2j + 1`` in the high one, two's complement); ``scales`` ``(out,
    n_groups)``, column ``c`` of row ``o`` dequantizes to ``q[o, c] * scales[o, c //
    group_size]``. ``x`` is ``(..., in)``; the result ``(..., out)`` in ``x``'s dtype, without
    bias or input pre-scaling (the layer applies those).

    Float layers (``spec.bits == 32``, only for kernels whose ``supports`` accepts such a
    spec) call ``kernel(x, weight, bias, bits=32, group_size=-1, transposed=spec.transposed)``:
    ``weight`` float32 ``(in, out)`` (``(out, in)`` when ``transposed``), ``bias`` ``(out,)``
    or None, and the result includes the bias.

    A layer asks :func:`paddlellm.modeling.linear.get_linear_kernel` once; a call may still return
    ``None`` ("not this call", e.g. too many rows for a matrix-vector kernel), and the layer
    then computes the product its own way.
    """

    name: str
    backends: tuple[str, ...]
    priority: int

    def supports(self, spec: LinearSpec) -> bool: ...

    def __call__(self, x: "paddle.Tensor", qweight: "paddle.Tensor", scales: "paddle.Tensor", *,
                 bits: int, group_size: int, **kwargs: Any) -> "paddle.Tensor | None": ...


# --- training ------------------------------------------------------------------------------

@optional(config_class=None, gathered=None)
@runtime_checkable
class TrainerStrategy(Protocol):
    """How a run spreads over devices (single, data/tensor/pipeline parallel, sharding).

    The registered target is a factory (usually the class) called with the strategy's
    validated options (an instance of its ``config_class``) or ``None``. Optional members:

    * ``config_class``: pydantic model of the strategy's ``llm run`` keys (default: none).
    * ``gathered(model)``: a context manager entered on every process around saving, inside
      which the main process's ``model`` holds the full, unsplit weights (tensor parallel);
      without it the model is saved as it is.
    """

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

@optional(accepts_config=None)
@runtime_checkable
class ModelFamily(Protocol):
    """A model family: a config adapter, a weight-name map and the blocks that differ.

    Weight maps work on NumPy arrays in the "torch layout" of ``transformers`` (linear
    weights ``(out, in)``); :mod:`paddlellm.checkpoint.loading` transposes into Paddle's
    ``(in, out)``. Optional: ``fan_in_fan_out`` (True when the Hugging Face linears are
    ``Conv1D``, GPT-2; peft adapters record it), ``aliases``, ``default_preset``,
    ``accepts_config(hf) -> bool`` (families that share a ``model_type``, ChatGLM-6B and
    ChatGLM2/3, say which configs are theirs; see :func:`paddlellm.modeling.auto.family_for_model_type`).
    """

    name: str
    #: one line for ``llm models`` / ``llm plugins``
    description: str
    #: Hugging Face ``model_type`` values this family loads
    model_types: tuple[str, ...]
    #: preset name -> config overrides (sizes), e.g. ``{"qwen2.5-0.5b": {...}}``
    presets: Mapping[str, Mapping[str, Any]]

    def config_from_hf(self, hf_config: Mapping[str, Any]) -> Any: ...

    def config_to_hf(self, config: Any) -> dict[str, Any]: ...

    def config_for(self, name: str | None = None, **overrides: Any) -> Any:
        """The config of preset ``name`` (the default preset for the family's own name)."""

    def build(self, config: Any, dtype: str = "float32", init: bool = True) -> "CausalLM":
        """A :class:`CausalLM` in ``dtype``; ``init=False`` skips random init (weights follow)."""

    def from_pretrained(self, path: str, dtype: str = "float32") -> "CausalLM":
        """Load a Hugging Face checkpoint (through :func:`paddlellm.checkpoint.load_pretrained`)."""

    def rename(self, name: str, to_hf: bool) -> str | None:
        """Our parameter name <-> the Hugging Face one (None when no rule matches)."""

    def is_ignored(self, hf_name: str) -> bool:
        """Whether a checkpoint tensor carries no weights (rotary caches, buffers)."""

    def from_hf_tensor(self, hf_name: str, array: "np.ndarray",
                       config: Any) -> list[tuple[str, "np.ndarray"]]:
        """A checkpoint tensor -> ``[(our name, array in torch layout)]`` (fused tensors split;
        ``[]`` for ignored ones and a tied ``lm_head``); an unknown name is a ``KeyError``."""

    def to_hf_state(self, state: Mapping[str, "np.ndarray"], config: Any) -> dict[str, "np.ndarray"]:
        """Our tensors (torch layout) -> Hugging Face names (parts of fused tensors joined)."""

    def save_groups(self, names: Iterable[str], config: Any) -> list[list[str]]:
        """Our parameter names grouped so that each group maps to HF tensors on its own."""


# --- fine-tuning, alignment -----------------------------------------------------------------

@optional(unmerge=None, batch_context=None)
@runtime_checkable
class PeftMethod(Protocol):
    """A parameter-efficient method: replaces modules of a built model.

    Used through :mod:`paddlellm.modeling.peft` (``apply_peft``, ``save_adapter``, ``load_adapter``,
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
      loss enters around the forward of ``batch`` (``paddlellm.modeling.peft.batch_context``), for
      adapters that need more than the input ids (ReFT: where each prompt ends).
    * Optional ``load_serving_adapters(model, directories)``: load several of its adapters
      unmerged onto one base for serving (``llm serve --lora_modules``,
      ``paddlellm.modeling.peft.load_serving_adapters``); returns an object whose
      ``set_rows(indices)`` makes token row ``n`` of the next forwards use adapter
      ``indices[n]`` (``k + 1`` for ``directories[k]``, 0 or ``set_rows(None)``: the base).
      An adapter that does not fit the model is an error naming its folder.
    * ``config_class``: the pydantic model of the method's ``llm run`` keys (``--lora_rank``);
      ``apply`` receives an instance of it.
    """

    name: str
    peft_type: str
    config_class: ClassVar[type["BaseModel"]]

    def apply(self, model: "paddle.nn.Layer", config: "BaseModel") -> "paddle.nn.Layer": ...

    def save_adapter(self, model: "paddle.nn.Layer", directory: str) -> None: ...

    def load_adapter(self, model: "paddle.nn.Layer", directory: str) -> "paddle.nn.Layer": ...

    def merge(self, model: "paddle.nn.Layer") -> "paddle.nn.Layer": ...


@optional(kind="pairwise", config_class=None)
@runtime_checkable
class AlignmentLoss(Protocol):
    """A preference loss on sequence log-probabilities, used by the ``align`` stage.

    The stage calls, in order: ``options = loss.resolve(run_options, align_name)`` once,
    ``loss.needs_reference_for(options)`` once (whether to keep a frozen reference model),
    then ``loss(batch, options)`` per step.

    * ``kind`` (optional, default ``"pairwise"``): ``"pairwise"`` losses get chosen/rejected
      pairs (preference jsonl), ``"pointwise"`` losses single labelled examples (KTO).
    * ``config_class`` (optional): the pydantic model of the loss's ``llm run`` keys.
    * ``resolve(options, align_name)``: ``options`` is the validated ``config_class`` instance
      (``None`` when the loss has no ``config_class``), ``align_name`` the name the user typed
      (an alias may select a variant: ``--align simpo``). Returns a pydantic model, the options
      used for the run (recorded in its summary); when ``needs_reference_for`` is true it must
      have a boolean ``precompute_ref_logps`` field.
    * Pairwise ``batch`` keys, each ``(P,)`` over ``P`` pairs: ``chosen_logps``,
      ``rejected_logps`` (summed policy log-probs of the responses), ``chosen_lengths``,
      ``rejected_lengths`` (response tokens), ``ref_chosen_logps``, ``ref_rejected_logps``
      (only when a reference is kept) and the scalar ``chosen_nll`` (mean NLL over chosen
      tokens).
    * Pointwise ``batch`` keys, each ``(B,)``: ``logps``, ``labels`` (bool, desirable),
      ``kl_logps`` (prompt ``i`` with completion ``i-1``, detached), ``ref_logps``,
      ``ref_kl_logps`` (with a reference) and the scalar ``chosen_nll``.
    * ``__call__`` returns the scalar loss (differentiable through the policy values) and a
      dict of float metrics, logged by the training loop.
    """

    name: str

    def resolve(self, options: "BaseModel | None", align_name: str) -> "BaseModel":
        """The options for this run (defaults filled, aliases applied)."""

    def needs_reference_for(self, options: "BaseModel") -> bool:
        """Whether the loss reads reference log-probabilities with these options."""

    def __call__(self, batch: Mapping[str, "paddle.Tensor"], options: "BaseModel") -> tuple["paddle.Tensor", dict[str, float]]:
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

@optional(needs_base=False, chunkable=None, prepare=None)
@runtime_checkable
class MergeMethod(Protocol):
    """Merges one tensor at a time, so that merges stream shard by shard.

    Optional members: ``needs_base`` (default False: whether ``base`` is required, as for
    task-vector methods); ``chunkable(params) -> bool`` (whether a large tensor may be merged
    in row blocks, ``params["_rows"] = (r0, r1)``; default: never); ``prepare(name, params,
    bounds, read) -> params`` (a first pass over the row blocks before a blocked merge).
    """

    name: str

    def merge_tensor(self, name: str, tensors: list["np.ndarray"], base: "np.ndarray | None",
                     params: Mapping[str, Any]) -> "np.ndarray": ...


@optional(needs_calibration=False, config_class=None)
@runtime_checkable
class Quantizer(Protocol):
    """Turns a float model into a quantized one (and loads quantized checkpoints).

    Registered under each ``quant_type`` it handles. A quantized model carries
    ``model.quantization_config`` (a JSON-able dict with at least ``quant_type``) and its
    ``save_pretrained`` writes that dict into ``config.json``. ``AutoModelForCausalLM
    .from_pretrained`` sees it there and calls :meth:`load_pretrained` of the quantizer
    registered for that ``quant_type``.

    Optional members: ``needs_calibration`` (default False: whether :meth:`quantize` needs
    calibration batches, as GPTQ, AWQ and static activation scales do) and ``config_class``
    (the pydantic model of the options, ``group_size`` ...: flat keys of ``llm quantize`` and
    of ``llm run --quant_type``).
    """

    name: str
    #: ``--quant_type`` values handled
    quant_types: tuple[str, ...]

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


# --- stages --------------------------------------------------------------------------------

@optional(config_class=None)
@runtime_checkable
class Stage(Protocol):
    """A training stage for ``llm run --stage NAME``: a callable ``stage(ctx) -> dict``.

    ``ctx`` is the composed run context (``config``, ``backend``, ``strategy``, ``registry``,
    ``options(kind)``, ``output_dir``); the returned summary (metrics, output paths) is printed
    and saved by ``llm run``. Optional ``config_class``: the pydantic model of the stage's own
    ``llm run`` keys (``ctx.options("stage")``).
    """

    def __call__(self, ctx: Any) -> dict[str, Any]: ...

# --- training loggers ----------------------------------------------------------------------

@optional(on_save=None, truncate_after=None, config_class=None)
@runtime_checkable
class TrainingLogger(Protocol):
    """Receives a training run's metrics (``--loggers NAME,...``; ``metrics.jsonl`` is always
    written by the built-in ``jsonl`` logger).

    Registered as a *factory*: a class (or function) called with the plugin's validated
    options (its ``config_class``, or None) on the main process when the run's session
    starts; a missing library is reported then (say which ``pip install`` brings it).

    * ``on_start(config, output_dir)``: the run's :class:`paddlellm.plugin.config.RunConfig` and its
      output folder (event files go under ``config.logging_dir`` or ``output_dir/runs``:
      :func:`paddlellm.training.loggers.logging_dir`);
    * ``log(step, metrics)``: one record: ``metrics`` maps names (``loss``, ``lr``,
      ``tokens_per_sec``, ``eval_loss``, ...) to numbers or strings, ``step`` is the optimizer
      step (0: before training);
    * ``on_end()``: the run is over (flush, close files).

    Optional: ``on_save(step)`` after the checkpoint of ``step`` is written;
    ``truncate_after(step)`` when a resumed run continues from the checkpoint of ``step``
    (called after ``on_start``; forget or mask what was logged past ``step`` so every step
    appears once); ``config_class`` (pydantic options: flat ``llm run`` keys).
    """

    def on_start(self, config: Any, output_dir: str) -> None: ...

    def log(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def on_end(self) -> None: ...


# --- the model object -----------------------------------------------------------------------

@runtime_checkable
class CausalLM(Protocol):
    """What the core and the plugins call on a model object (a ``paddle.nn.Layer``).

    ``ModelFamily.build`` and ``AutoModelForCausalLM`` return one; the training loop, the
    generation loop, the serving engine, PEFT methods, quantizers and alignment losses use
    only these members (plus ``nn.Layer``'s own: ``parameters``, ``named_sublayers``,
    ``eval``, ...). ``tests/test_model_contract.py`` checks every registered family's model.

    * ``config``: the family's model config; fields read outside the model are
      ``num_layers``, ``num_heads``, ``num_kv_heads``, ``head_dim``, ``hidden_size``,
      ``vocab_size``, ``max_position_embeddings``, ``rope_scaling`` and the token ids.
    * ``model.layers``: the decoder layers, each with ``self_attn`` (layer-wise PEFT, int8 KV
      scales, SmoothQuant and the alignment losses' cache walk by it).
    * Caches: ``new_cache`` (contiguous, for ``generate``) and ``new_paged_cache`` (the
      serving engine's pool) are built by the registered :class:`KVCacheLayout` named by
      ``kv_cache_layout`` (``"float"`` unless a quantizer picks another); the engine budgets
      its pool in ``kv_cache_dtype`` bytes.
    * ``prefix_kv``: set by prefix tuning: a callable ``batch -> [(k, v)] * num_layers`` of
      ``(B, P, Hkv, D)`` prefix keys/values, or None.
    * Checkpoints: ``family.from_pretrained`` and ``save_pretrained`` go through the core's
      services :func:`paddlellm.checkpoint.load_pretrained` / ``save_pretrained`` (a model
      carrying ``quantization_config`` saves its quantized layers as they are).
    """

    config: Any
    family: ModelFamily
    #: ``generation_config.json`` defaults (eos/pad/bos ids) of a loaded checkpoint
    generation_config: dict[str, Any]
    #: name of the registered KV-cache layout (``register_kv_cache_layouts``)
    kv_cache_layout: str
    prefix_kv: Any
    model: Any

    @property
    def dtype(self) -> str:
        """The dtype activations and KV caches use (``"float32"``, ``"bfloat16"``, ...)."""

    @property
    def kv_cache_dtype(self) -> str:
        """The dtype the KV cache stores (what the engine budgets its pool by)."""

    def forward(self, input_ids: "paddle.Tensor", attention_mask: "paddle.Tensor | None" = None,
                position_ids: "paddle.Tensor | None" = None, cache: Any = None,
                logits_to_keep: int = 0, segment_ids: "paddle.Tensor | None" = None) -> "paddle.Tensor":
        """Logits ``(B, T, V)`` of ``input_ids`` ``(B, T)`` (the last ``logits_to_keep`` when > 0)."""

    def forward_hidden(self, input_ids: "paddle.Tensor", attention_mask: "paddle.Tensor | None" = None,
                       position_ids: "paddle.Tensor | None" = None, cache: Any = None,
                       segment_ids: "paddle.Tensor | None" = None) -> "paddle.Tensor":
        """Final hidden states ``(B, T, H)``; ``logits(forward_hidden(x)) == forward(x)``."""

    def logits(self, hidden: "paddle.Tensor") -> "paddle.Tensor":
        """``(B, T, H)`` hidden states -> ``(B, T, V)`` logits."""

    def new_cache(self, batch: int, max_length: int, dtype: str | None = None) -> Any:
        """A contiguous KV cache (:class:`KVCacheLayer` per layer) for ``batch`` rows."""

    def new_paged_cache(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int,
                        head_dim: int, dtype: str = "float32") -> Any:
        """The serving engine's paged pool (layers follow :class:`PagedKVCacheLayer`)."""

    def cache_needs_refresh(self, cached: int, total: int) -> bool:
        """Whether keys cached for ``cached`` positions are stale at ``total`` (longrope)."""

    def enable_recompute(self, enabled: bool = True) -> "CausalLM":
        """Gradient checkpointing of the decoder layers."""

    def generate(self, input_ids: Any, attention_mask: Any = None, **kwargs: Any) -> "paddle.Tensor":
        """See :func:`paddlellm.modeling.generation.generate`."""

    def save_pretrained(self, directory: str, *, max_shard_size: str = "5GB",
                        dtype: str | None = None) -> list[str]:
        """Write a Hugging Face checkpoint; returns the weight files written."""


@optional(extra_bytes_per_token=None)
@runtime_checkable
class KVCacheLayout(Protocol):
    """How a model stores its KV cache; registered by name (``register_kv_cache_layouts``).

    A model names its layout in ``model.kv_cache_layout``; its ``new_cache``,
    ``new_paged_cache`` and ``kv_cache_dtype`` ask that layout, so a quantizer changes how a
    model caches by setting a name, never by replacing methods. The core registers
    ``"float"`` (the model's dtype, :mod:`paddlellm.modeling.kv_layout`).

    Optional ``extra_bytes_per_token(model) -> int``: what the paged pool keeps per cached
    token beside the keys and values, all layers together (Yuan's filter inputs); the engine
    sizes its pool from the budget with it.
    """

    name: str

    def storage_dtype(self, model: CausalLM) -> str:
        """The dtype the cache stores (the engine budgets its pool in these bytes)."""

    def new_cache(self, model: CausalLM, batch: int, max_length: int, dtype: str) -> Any:
        """A contiguous cache: one :class:`KVCacheLayer` per layer of ``model``, returning
        keys/values in ``dtype``."""

    def new_paged_cache(self, model: CausalLM, num_layers: int, num_blocks: int, block_size: int,
                        kv_heads: int, head_dim: int, dtype: str) -> Any:
        """A paged pool for the serving engine (``paddlellm.modeling.kv_manager.PagedKVCache``
        or a subclass; its batch views' layers offer ``gather_kv`` if not stored in ``dtype``)."""


@runtime_checkable
class QuantizedModule(Protocol):
    """The marker of a layer whose weights are stored quantized (a quantizer's layers).

    A quantizer's layers declare it with the class attribute ``quantized = True`` (and their
    ``bits``). Code that must treat them differently asks ``is_quantized_module(layer)``:
    the checkpoint loader reads their persistable tensors by the layer's own names and dtypes
    (``model.layers.0.mlp.down_proj.qweight``) instead of through the family's name map, and
    QLoRA keeps them as the frozen base of an adapter. ``optional_tensors`` names tensors a
    checkpoint may lack (``g_idx`` of GPTQ).
    """

    quantized: bool
    #: stored precision of the weights in bits
    bits: int
    optional_tensors: tuple[str, ...]


def is_quantized_module(layer: Any) -> bool:
    """Whether ``layer`` declares :class:`QuantizedModule` (``quantized = True``)."""
    return getattr(layer, "quantized", False) is True
