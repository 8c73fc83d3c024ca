"""The model contract is enforced: every registered model family follows
:class:`paddlellm.interfaces.ModelFamily`, a tiny model built by each follows
:class:`paddlellm.interfaces.CausalLM` (members and signatures) and behaves as the contract
says; KV-cache layouts and quantized layers are found through declared, registered names."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm.interfaces import CausalLM, KVCacheLayout, ModelFamily, QuantizedModule, is_quantized_module
from paddlellm.plugin.manager import get_registry
from paddlellm.testing.contract import protocol_members, protocol_problems

FAMILIES = get_registry().names("model")


def test_every_family_is_checked():
    assert len(FAMILIES) >= 15 and {"qwen2", "llama", "gpt2", "chatglm2"} <= set(FAMILIES)
    # the contract lists what the core and plugins call, so that the check is meaningful
    members = protocol_members(CausalLM)
    assert {"forward", "forward_hidden", "logits", "new_cache", "new_paged_cache", "kv_cache_dtype",
            "kv_cache_layout", "family", "config", "prefix_kv", "enable_recompute",
            "save_pretrained", "generate", "dtype"} <= set(members)
    assert {"rename", "from_hf_tensor", "to_hf_state", "save_groups", "is_ignored", "build",
            "from_pretrained", "config_for"} <= set(protocol_members(ModelFamily))


def _tiny(family):
    config = family.config_for(family.name)
    return family.build(config.replace(vocab_size=64, num_layers=1))


@pytest.mark.parametrize("name", FAMILIES)
def test_family_and_its_model_follow_the_protocols(name):
    family = get_registry().load("model", name)
    assert protocol_problems(family, ModelFamily) == [], name
    model = _tiny(family)
    assert protocol_problems(model, CausalLM) == [], name
    assert isinstance(model, CausalLM) and model.family is family
    # what the contract promises: logits(forward_hidden(x)) == forward(x), caches in the layout
    ids = paddle.to_tensor([[1, 5, 7, 2]])
    with paddle.no_grad():
        full = model(ids)
        np.testing.assert_allclose(model.logits(model.forward_hidden(ids)).numpy(), full.numpy(),
                                   rtol=1e-6, atol=1e-6)
        cache = model.new_cache(1, 8)
        np.testing.assert_allclose(model(ids, cache=cache).numpy(), full.numpy(), rtol=1e-4, atol=1e-5)
    assert len(cache[0]) == 4 and model.kv_cache_dtype == model.dtype
    # the default layout, or a registered one of the family's own (Yuan's filter state)
    assert model.kv_cache_layout in get_registry().names("kv_cache_layout")
    layout = get_registry().load("kv_cache_layout", model.kv_cache_layout)
    assert isinstance(layout, KVCacheLayout) and protocol_problems(layout, KVCacheLayout) == []
    assert model.kv_cache_layout == "float" or name == "yuan"


def test_problems_name_the_missing_or_wrong_member():
    class Half:  # a third-party model that forgot parts of the contract
        config = family = generation_config = prefix_kv = model = None
        kv_cache_layout = "float"
        dtype = kv_cache_dtype = "float32"

        def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None,
                    logits_to_keep=0, segment_ids=None):
            return input_ids

        def forward_hidden(self, ids, attention_mask=None, position_ids=None, cache=None,
                           segment_ids=None):  # a renamed positional parameter is fine
            return ids

        def logits(self, hidden, scale):  # an extra required parameter
            return hidden

        def enable_recompute(self, enabled):  # the contract's default is missing
            return self

        def cache_needs_refresh(self, cached):  # a positional parameter too few
            return False

        def generate(self, input_ids, attention_mask=None):  # no **kwargs
            return input_ids

        new_cache = None  # not callable

    problems = protocol_problems(Half(), CausalLM)
    assert "lacks 'new_paged_cache'" in problems and "lacks 'save_pretrained'" in problems
    assert "logits() has extra parameter 'scale' without a default" in problems
    assert "enable_recompute() parameter 'enabled' needs a default" in problems
    assert "cache_needs_refresh() lacks positional parameter 'total'" in problems
    assert "generate() does not accept **kwargs" in problems
    assert "'new_cache' is not callable" in problems
    assert not any(p.startswith(("forward()", "forward_hidden()")) for p in problems), problems
    assert len(problems) == 7, problems


def test_kv_cache_layouts_are_registered_and_checked():
    registry = get_registry()
    assert "float" in registry.names("kv_cache_layout")
    for name in registry.names("kv_cache_layout"):
        layout = registry.load("kv_cache_layout", name)
        assert layout.name == name and protocol_problems(layout, KVCacheLayout) == [], name
    model = _tiny(get_registry().load("model", "llama"))
    model.kv_cache_layout = "int3"
    with pytest.raises(Exception, match="int3"):  # an unknown layout names itself and lists the valid
        model.new_cache(1, 4)


def test_quantized_layers_are_recognised_by_the_declared_marker():
    class Marked(paddle.nn.Layer):  # any quantizer's layer, from any module
        quantized = True
        bits = 4
        optional_tensors = ()

    assert is_quantized_module(Marked()) and isinstance(Marked(), QuantizedModule)
    assert not is_quantized_module(paddle.nn.Linear(2, 2))
    from paddlellm.plugin.manager import get_plugin_manager

    hook = get_plugin_manager().hook.wrap_base_layer_for_adapter
    if "weight_only_int8" in get_registry().names("quantizer"):  # the quant plugin's QLoRA hook
        assert hook(layer=Marked(), adapter_name="default", method="lora") is not None
        assert hook(layer=paddle.nn.Linear(2, 2), adapter_name="default", method="lora") is None


def test_quantized_models_declare_the_marker_and_round_trip_through_the_core_services(tmp_path):
    if "weight_only_int8" not in get_registry().names("quantizer"):
        pytest.skip("the quant plugin is not installed")
    from paddlellm import AutoModelForCausalLM
    from paddlellm.modeling.auto import quantize_model
    from paddlellm.checkpoint import quantized_modules

    model = quantize_model(AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64),
                           "weight_only_int8")
    layers = quantized_modules(model)
    assert len(layers) == 7 * model.config.num_layers  # q, k, v, o, gate, up, down
    assert all(protocol_problems(layer, QuantizedModule) == [] for layer in layers.values())
    assert "save_pretrained" not in vars(model)  # the core's save, not a patched method
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.quantization_config["quant_type"] == "weight_only_int8"
    ids = paddle.to_tensor([[1, 5, 7, 2]])
    with paddle.no_grad():
        np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())
