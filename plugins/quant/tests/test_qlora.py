"""QLoRA: LoRA adapters (plugins/peft) train on a weight-only int4 base through the
``wrap_base_layer_for_adapter`` hook; the base stays integer and unchanged."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddlellm.modeling.auto import quantize_model
from paddlellm.plugin.config import build_run_config
from paddlellm.errors import ConfigError
from paddlellm.modeling.prepare import prepare_for_training
from paddlellm.modeling.peft import apply_peft, load_adapter, save_adapter
from paddlellm.plugin.manager import get_plugin_manager
from paddlellm_quant.layers import WeightOnlyLinear
from paddlellm_quant.packed import AWQLinear, GPTQLinear
from quant_testutil import load_demo


def lm_loss(model, ids: paddle.Tensor) -> paddle.Tensor:
    logits = model(ids[:, :-1])  # (B, T-1, V)
    return F.cross_entropy(logits, ids[:, 1:].unsqueeze(-1)).mean()


def test_lora_trains_on_an_int4_base(tokenizer, tmp_path):
    paddle.seed(0)
    model = quantize_model(load_demo(), "weight_only_int4", config={"group_size": 32})
    base_before = {n: l.qweight.numpy().copy() for n, l in model.named_sublayers()
                   if isinstance(l, WeightOnlyLinear)}
    model = apply_peft(model, "lora", {"lora_rank": 4, "lora_alpha": 8})
    lora = [l for _, l in model.named_sublayers() if type(l).__name__ == "LoraLinear"]
    assert len(lora) == 4 * 7 and all(isinstance(l.base_layer, WeightOnlyLinear) for l in lora)
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    adapter = {id(p) for l in lora for n, p in l.named_parameters() if not n.startswith("base_layer")}
    assert {id(p) for p in trainable} == adapter  # only the adapters train
    # a new fact the model cannot know: learning it needs the adapters to train
    text = "What colour is the zebra? purple. What colour is the zebra? purple."
    ids = paddle.to_tensor(np.array([tokenizer.encode(text, add_special_tokens=False)] * 4))
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-2, parameters=trainable)
    model.train()
    first = float(lm_loss(model, ids))
    for _ in range(15):
        loss = lm_loss(model, ids)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    last = float(lm_loss(model, ids))
    assert last < 0.5 * first, (first, last)
    for name, layer in model.named_sublayers():  # the base stayed integer and unchanged
        if isinstance(layer, WeightOnlyLinear):
            key = name.replace(".base_layer", "")
            assert str(layer.qweight.dtype).endswith("uint8")
            np.testing.assert_array_equal(layer.qweight.numpy(), base_before[key])
            assert all(p.stop_gradient for p in layer.parameters())
    # the adapter saves and reloads onto a freshly quantized base
    save_adapter(model, tmp_path)
    model.eval()
    fresh = load_adapter(quantize_model(load_demo(), "weight_only_int4", config={"group_size": 32}),
                         tmp_path)
    fresh.eval()
    np.testing.assert_allclose(fresh(ids).numpy(), model(ids).numpy(), rtol=1e-5, atol=1e-5)


def test_run_config_quant_type_quantizes_the_base_for_peft():
    registry = get_plugin_manager().registry
    config = build_run_config(None, ["--peft", "lora", "--quant_type", "weight_only_int4",
                                     "--group_size", "64"], registry=registry)
    model = prepare_for_training(load_demo(), config)
    layer = model.model.layers[0].mlp.up_proj
    assert isinstance(layer, WeightOnlyLinear) and layer.bits == 4 and layer.group_size == 64
    config = build_run_config(None, ["--quant_type", "weight_only_int8"], registry=registry)
    with pytest.raises(ConfigError, match="add --peft"):
        prepare_for_training(load_demo(), config)
    config = build_run_config(None, ["--peft", "lora", "--quant_type", "gptq"], registry=registry)
    with pytest.raises(ConfigError, match="needs calibration data: run `llm quantize` first"):
        prepare_for_training(load_demo(), config)
    with pytest.raises(ConfigError, match="unknown config key 'group_siz'"):
        build_run_config(None, ["--peft", "lora", "--quant_type", "weight_only_int4",
                                "--group_siz", "64"], registry=registry)


def test_lora_on_calibrated_bases_starts_from_the_quantized_model(tiny_calibration):
    """GPTQ/AWQ bases (the published packed layouts) wrap the same way; LoRA starts as a no-op."""
    ids = paddle.to_tensor(np.array([[3, 50, 7, 200, 11, 9]], dtype="int64"))
    for quant_type, layer_class in (("gptq", GPTQLinear), ("awq", AWQLinear)):
        model = quantize_model(load_demo(), quant_type, tiny_calibration, {"group_size": 32})
        want = model(ids).numpy()
        model = apply_peft(model, "lora", {"lora_rank": 2, "target_modules": ["down_proj"]})
        layer = model.model.layers[0].mlp.down_proj
        assert isinstance(layer.base_layer, layer_class)
        np.testing.assert_allclose(model(ids).numpy(), want, rtol=1e-6, atol=1e-6)
        loss = lm_loss(model, ids)
        loss.backward()
        assert layer.lora_A.grad is not None or layer.lora_B.grad is not None
