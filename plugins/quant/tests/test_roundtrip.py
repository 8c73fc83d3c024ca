"""Quantized checkpoints: save -> from_pretrained gives the in-memory model's logits; the
checkpoint stores integers and scales under clear names with a quantization_config."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

import paddlellm
from paddlellm.modeling.auto import quantize_model
from paddlellm.checkpoint import CheckpointReader
from paddlellm_quant.layers import WeightOnlyLinear
from paddlellm_quant.packed import AWQLinear, GPTQLinear
from quant_testutil import DEMO, load_demo

CASES = {
    "weight_only_int8": {},
    "weight_only_int4": {"group_size": 64},  # 352 = 5 * 64 + 32: a ragged last group
    "gptq": {"group_size": 32, "act_order": True},
    "awq": {"group_size": 32},  # AWQ's layout needs group_size | in_features (352)
}
#: GPTQ: qweight (in / 8, out), qzeros (groups, out / 8), scales (groups, out), g_idx (in,);
#: AWQ: qweight (in, out / 8), qzeros and scales as GPTQ; down_proj is 352 -> 128
PACKED = {"gptq": {"qweight": ((44, 128), "int32"), "qzeros": ((11, 16), "int32"),
                   "scales": ((11, 128), "float16"), "g_idx": ((352,), "int32")},
          "awq": {"qweight": ((352, 16), "int32"), "qzeros": ((11, 16), "int32"),
                  "scales": ((11, 128), "float16")}}
IDS = paddle.to_tensor(np.array([[3, 50, 7, 200, 11, 9], [1, 2, 3, 4, 5, 6]], dtype="int64"))


@pytest.mark.parametrize("quant_type", list(CASES))
def test_round_trip_gives_the_same_logits(quant_type, tiny_calibration, tmp_path):
    model = quantize_model(load_demo(), quant_type,
                           tiny_calibration if quant_type in ("gptq", "awq") else None,
                           CASES[quant_type])
    want = model(IDS).numpy()
    model.save_pretrained(str(tmp_path))
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    bits = 8 if quant_type == "weight_only_int8" else 4
    assert qc["quant_type"] == quant_type and qc["bits"] == bits
    assert qc["group_size"] == CASES[quant_type].get("group_size", -1)
    with CheckpointReader(tmp_path) as reader:
        name = "model.layers.0.mlp.down_proj"
        if quant_type in PACKED:  # the published layouts (tensor contents: test_packed.py)
            assert qc["quant_method"] == quant_type and "format" not in qc
            for key, (shape, dtype) in PACKED[quant_type].items():
                assert (reader.shape(f"{name}.{key}"), reader.dtype(f"{name}.{key}")) == (shape, dtype), key
            assert f"{name}.pre_scale" not in reader
        else:
            assert qc["quant_method"] == "paddlellm_weight_only"
            assert reader.dtype(f"{name}.qweight") == ("int8" if bits == 8 else "uint8")
            assert reader.shape(f"{name}.qweight") == ((128, 352) if bits == 8 else (128, 176))
            assert reader.dtype(f"{name}.scales") == "float32"
        assert "model.layers.0.self_attn.q_proj.bias" in reader  # Qwen2's q/k/v biases
        assert "model.embed_tokens.weight" in reader
    loaded = paddlellm.AutoModelForCausalLM.from_pretrained(tmp_path)
    layer_class = {"gptq": GPTQLinear, "awq": AWQLinear}.get(quant_type, WeightOnlyLinear)
    assert isinstance(loaded.model.layers[3].mlp.down_proj, layer_class)
    assert loaded.quantization_config["quant_type"] == quant_type
    np.testing.assert_array_equal(loaded(IDS).numpy(), want)
    out = loaded.generate(IDS[:1], max_new_tokens=3)
    assert out.shape[1] > IDS.shape[1]


@pytest.mark.parametrize("preset", ["phi3-tiny", "qwen3-moe-tiny", "gpt-tiny"])
def test_round_trip_other_families(preset, tmp_path):
    """Fused q/k/v (phi3, gpt2) and MoE (experts no token reaches: empty Hessians; the router
    stays float)."""
    paddle.seed(0)
    model = paddlellm.AutoModelForCausalLM.from_config(preset, vocab_size=300)
    calibration = [np.random.default_rng(0).integers(0, 300, (2, 16))]
    quantize_model(model, "gptq", calibration, {"group_size": 32})
    want = model(IDS).numpy()
    model.save_pretrained(str(tmp_path))
    loaded = paddlellm.AutoModelForCausalLM.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded(IDS).numpy(), want)
    if preset == "qwen3-moe-tiny":
        assert isinstance(loaded.model.layers[0].mlp.gate, paddle.nn.Linear)


def test_quantize_on_load_and_clear_errors(tmp_path):
    model = paddlellm.AutoModelForCausalLM.from_pretrained(DEMO, quant_type="weight_only_int4",
                                                          quant_config={"group_size": 32})
    assert model.model.layers[0].self_attn.q_proj.group_size == 32
    with pytest.raises(ValueError, match="needs calibration data.*llm quantize"):
        paddlellm.AutoModelForCausalLM.from_pretrained(DEMO, quant_type="gptq")
    with pytest.raises(Exception, match="unknown quantizer 'int3'.*valid:.*weight_only_int8"):
        paddlellm.AutoModelForCausalLM.from_pretrained(DEMO, quant_type="int3")
    model.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="already quantized as 'weight_only_int4'"):
        paddlellm.AutoModelForCausalLM.from_pretrained(tmp_path, quant_type="weight_only_int8")
    with pytest.raises(Exception, match="already quantized as 'weight_only_int4'"):
        quantize_model(model, "weight_only_int8")
    assert quantize_model(model, "weight_only_int4") is model  # already that type: unchanged
