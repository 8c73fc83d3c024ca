"""LoRA and variants: peft-format parity both ways, merge == unmerged, disable, QLoRA hook.

Fixtures: ``scripts/fixtures/make_peft_fixtures.py`` (peft 0.21.2). The paddlellm -> peft
direction runs that script with ``$PADDLELLM_DEV_PYTHON`` (skipped when unset).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlellm.api import AutoModelForCausalLM, hookimpl
from paddlellm.errors import ConfigError
from paddlellm.modeling.peft import (apply_peft, disable_adapters, load_adapter, merge_adapter,
                                     save_adapter, trainable_parameter_report, unmerge_adapter)
from paddlellm_peft.common import AdapterError
from paddlellm_peft.lora.layer import LoraLinear

FIX = Path(__file__).parent / "fixtures" / "lora"
BASE = FIX / "base"
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "fixtures" / "make_peft_fixtures.py"
REF = dict(np.load(FIX / "reference.npz"))
VARIANTS = {
    "plain": {"lora_rank": 4, "lora_alpha": 8},
    "rslora": {"lora_rank": 4, "lora_alpha": 6, "rslora": True, "target_modules": "q_proj,v_proj"},
    "dora": {"lora_rank": 2, "lora_alpha": 4, "use_dora": True},
    "pissa": {"lora_rank": 2, "lora_alpha": 2, "pissa": True},
    "mixer": {"lora_rank": 3, "lora_alpha": 6, "lora_use_mixer": True},
    "lora_plus": {"lora_rank": 2, "lora_alpha": 4, "lora_plus_scale": 8},
}


def base_model():
    return AutoModelForCausalLM.from_pretrained(BASE)


def logits(model, batch: bool = False) -> np.ndarray:
    with paddle.no_grad():
        if batch:
            return model(paddle.to_tensor(REF["batch_ids"]),
                         attention_mask=paddle.to_tensor(REF["batch_mask"]),
                         position_ids=paddle.to_tensor(REF["batch_pos"])).numpy()
        return model(paddle.to_tensor(REF["ids"])).numpy()


def randomize(model, seed: int) -> None:
    """Every adapter tensor random and nonzero (B too), as after training."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if not p.stop_gradient:
            noise = rng.standard_normal(p.shape).astype("float32")
            scale = 0.2 * (np.abs(p.numpy()).mean() if "magnitude" in name else 1.0)
            p.set_value(paddle.to_tensor(p.numpy() + scale * noise))


def adapted(variant: str, seed: int = 0):
    model = apply_peft(base_model(), "lora", VARIANTS[variant])
    randomize(model, seed)
    return model.eval()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- peft -> paddlellm ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lora", "rslora", "dora", "pissa"])
def test_peft_adapter_loads_with_peft_logits(name):
    model = AutoModelForCausalLM.from_pretrained(BASE, lora_path=FIX / name)
    assert model.peft_method == "lora"
    assert np.abs(logits(model) - REF[f"{name}_logits"]).max() <= 1e-5
    assert np.abs(logits(model, batch=True) - REF[f"{name}_batch_logits"]).max() <= 1e-5
    assert np.abs(logits(model) - REF["base_logits"]).max() > 1e-2  # the adapter matters


def test_peft_regex_targets_and_dora_magnitude_are_read():
    model = AutoModelForCausalLM.from_pretrained(BASE, lora_path=FIX / "rslora")
    paths = [p for p, l in model.named_sublayers() if isinstance(l, LoraLinear)]
    assert sorted({p.split(".")[-1] for p in paths}) == ["q_proj", "v_proj"]
    assert model.peft_config.rslora and model.peft_config.lora_rank == 4
    dora = AutoModelForCausalLM.from_pretrained(BASE, lora_path=FIX / "dora")
    layer = dora.model.layers[0].self_attn.q_proj
    assert layer.use_dora and tuple(layer.lora_magnitude.shape) == (32,)


# --- paddlellm -> peft ----------------------------------------------------------------------

DEV = os.environ.get("PADDLELLM_DEV_PYTHON")


@pytest.mark.skipif(not DEV, reason="PADDLELLM_DEV_PYTHON (torch + peft) not set")
def test_our_adapters_load_in_peft_with_our_logits(tmp_path):
    ours, pairs = {}, []
    for i, name in enumerate(["plain", "rslora", "dora", "pissa"]):
        model = adapted(name, seed=i)
        save_adapter(model, tmp_path / name)
        ours[name] = (logits(model), logits(model, batch=True))
        pairs += [str(tmp_path / name), str(tmp_path / f"{name}.npz")]
    pissa_cfg = json.loads((tmp_path / "pissa" / "adapter_config.json").read_text())
    assert pissa_cfg["r"] == 4 and pissa_cfg["lora_alpha"] == 4  # converted: rank 2r
    subprocess.run([DEV, str(SCRIPT), "--check", *pairs], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    for name, (single, batch) in ours.items():
        theirs = np.load(tmp_path / f"{name}.npz")
        assert np.abs(theirs["logits"] - single).max() <= 1e-5, name
        assert np.abs(theirs["batch_logits"] - batch).max() <= 1e-5, name
        assert rel(theirs["merged_logits"], single) <= 1e-5, name  # peft's own merge agrees


# --- round trip, merge, disable ------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_load_merge_unmerge_disable(variant, tmp_path):
    base_out = logits(base_model())
    fresh = apply_peft(base_model(), "lora", VARIANTS[variant])
    assert rel(logits(fresh.eval()), base_out) <= 1e-5  # every variant starts at the base
    model = adapted(variant, seed=3)
    out = logits(model)
    assert rel(out, base_out) > 1e-3
    save_adapter(model, tmp_path / "a")
    reloaded = load_adapter(base_model(), tmp_path / "a").eval()
    assert rel(logits(reloaded), out) <= 1e-5
    with disable_adapters(model):
        assert rel(logits(model), base_out) <= 1e-5  # PiSSA too: residual + A0 B0
    assert rel(logits(model), out) == 0.0  # switched back on
    merged = merge_adapter(apply_peft(base_model(), "lora", VARIANTS[variant]))
    assert not any(isinstance(l, LoraLinear) for _, l in merged.named_sublayers())
    merged = merge_adapter(model)
    assert not any(isinstance(l, LoraLinear) for _, l in merged.named_sublayers())
    assert rel(logits(merged), out) <= 1e-5
    assert getattr(merged, "peft_method", None) is None


def test_merge_in_place_and_unmerge_restore_the_base_weights():
    model = adapted("dora", seed=5)
    q = model.model.layers[1].self_attn.q_proj
    w0, out = q.base_layer.weight.numpy().copy(), logits(model)
    merge_adapter(model, unload=False)
    assert q.merged and rel(logits(model), out) <= 1e-5
    with pytest.raises(RuntimeError, match="unmerge it before disabling"):
        with disable_adapters(model):
            logits(model)
    unmerge_adapter(model)
    assert not q.merged and np.abs(q.base_layer.weight.numpy() - w0).max() < 1e-5


def test_trainable_report_and_frozen_base():
    model = apply_peft(base_model(), "lora", {"lora_rank": 2, "target_modules": "q_proj"})
    trainable, total, text = trainable_parameter_report(model)
    assert trainable == 2 * (32 * 2 + 2 * 32)  # 2 layers x (A (32, 2) + B (2, 32))
    assert f"trainable params: {trainable:,}" in text and "trainable%" in text
    assert all(p.stop_gradient for n, p in model.named_parameters() if "lora_" not in n)


def test_lora_plus_scales_the_learning_rate_of_b():
    from types import SimpleNamespace

    from paddlellm.api import build_optimizer

    def one_step(scale: float):
        paddle.seed(0)
        model = apply_peft(base_model(), "lora", {"lora_rank": 2, "lora_plus_scale": scale,
                                                 "target_modules": "q_proj"})
        q = model.model.layers[0].self_attn.q_proj
        q.lora_B.set_value(paddle.full(q.lora_B.shape, 0.01))
        before = {n: p.numpy().copy() for n, p in model.named_parameters() if not p.stop_gradient}
        cfg = SimpleNamespace(learning_rate=1e-3, warmup_steps=0, warmup_ratio=0.0,
                              lr_scheduler_type="constant", adam_beta1=0.9, adam_beta2=0.999,
                              adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=0.0)
        opt, _ = build_optimizer(model, cfg, total_steps=10)
        model.train()
        model(paddle.to_tensor(REF["ids"])).mean().backward()
        opt.step()
        return {n: np.abs(p.numpy() - before[n]).max() for n, p in model.named_parameters()
                if n in before}

    plain, plus = one_step(1.0), one_step(8.0)
    b = next(n for n in plain if n.endswith("lora_B"))
    a = next(n for n in plain if n.endswith("lora_A"))
    assert plus[b] == pytest.approx(8 * plain[b], rel=1e-3)  # Adam's first step ~ lr
    assert plus[a] == pytest.approx(plain[a], rel=1e-3)


# --- errors ---------------------------------------------------------------------------------

def test_targets_matching_nothing_list_the_valid_names():
    with pytest.raises(AdapterError, match=r"matched no layer.*q_proj.*v_proj"):
        apply_peft(base_model(), "lora", {"target_modules": "qkv"})


def test_bad_options_and_adapters_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="lora_rank"):
        apply_peft(base_model(), "lora", {"lora_rank": 0})
    with pytest.raises(ConfigError, match="pissa cannot be combined"):
        apply_peft(base_model(), "lora", {"pissa": True, "use_dora": True})
    model = apply_peft(base_model(), "lora", {"lora_rank": 8})
    with pytest.raises(AdapterError, match=r"rank 4 in the adapter but rank 8 in the model"):
        load_adapter(model, FIX / "lora")  # rank 4 file onto rank-8 layers
    pissa = apply_peft(base_model(), "lora", {"lora_rank": 4, "pissa": True})
    with pytest.raises(AdapterError, match="continues only from its own PiSSA checkpoints"):
        load_adapter(pissa, FIX / "lora")  # a plain adapter onto a residual base
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ConfigError, match="no installed PEFT method reads peft_type 'IA3'.*LORA"):
        load_adapter(base_model(), bad)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_adapter(base_model(), tmp_path)


# --- QLoRA hook -----------------------------------------------------------------------------

class FakeQuantLinear(paddle.nn.Layer):
    """A stand-in quantized base: int8 weight + scale, no float ``weight`` attribute."""

    def __init__(self, linear):
        super().__init__()
        w = linear.weight.numpy()  # (in, out)
        self.scale = float(np.abs(w).max() / 127)
        self.qweight = paddle.to_tensor(np.round(w / self.scale).astype("int8"))
        self.in_features, self.out_features = w.shape
        self.bias = linear.bias

    def forward(self, x):
        out = paddle.matmul(x, self.qweight.astype("float32") * self.scale)
        return out if self.bias is None else out + self.bias


class FakeQuantPlugin:
    calls: list = []

    @hookimpl
    def wrap_base_layer_for_adapter(self, layer, adapter_name, method):
        self.calls.append((adapter_name, method))
        return FakeQuantLinear(layer)


def test_qlora_hook_supplies_the_base_layer(monkeypatch):
    from paddlellm.plugin import manager as plugins

    manager = plugins.PluginManager()
    plugin = FakeQuantPlugin()
    manager.register(plugin, "fake_quant")
    monkeypatch.setattr(plugins, "_default", manager)
    model = apply_peft(base_model(), "lora", {"lora_rank": 2, "target_modules": "q_proj,v_proj"})
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, FakeQuantLinear)
    assert plugin.calls[:1] == [("default", "lora")] and len(plugin.calls) == 4
    randomize(model, 1)
    x = paddle.randn([3, 32])
    expect = q.base_layer(x) + paddle.matmul(paddle.matmul(x, q.lora_A), q.lora_B) * q.scaling
    assert np.abs(q(x).numpy() - expect.numpy()).max() < 1e-5
    model.train()
    model(paddle.to_tensor(REF["ids"])).mean().backward()
    assert q.lora_A.grad is not None and float(q.lora_B.grad.abs().sum()) > 0
    with pytest.raises(AdapterError, match="cannot merge LoRA into a FakeQuantLinear base"):
        merge_adapter(model)
    with pytest.raises(AdapterError, match="DoRA needs the float weight.*FakeQuantLinear"):
        apply_peft(base_model(), "lora", {"use_dora": True, "target_modules": "q_proj"})


def test_run_setup_applies_options_and_starts_from_lora_path(capsys):
    from types import SimpleNamespace

    from paddlellm.api import setup_run_peft
    from paddlellm_peft.lora.config import LoraConfig

    options = LoraConfig(lora_rank=4, lora_alpha=8, lora_path=str(FIX / "lora"))
    model = setup_run_peft(base_model(), SimpleNamespace(peft="lora"), options).eval()
    assert "[lora] trainable params: " in capsys.readouterr().out
    assert np.abs(logits(model) - REF["lora_logits"]).max() <= 1e-5
    assert all(not p.stop_gradient for n, p in model.named_parameters() if "lora_" in n)
