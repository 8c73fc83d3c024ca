"""Several LoRA adapters on one base, chosen per token row (``MultiLoraLinear``): each row's
output is the base output plus its own adapter's update (ranks padded, scalings folded),
whatever mix of adapters and base rows a batch holds; loading checks the folders."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from paddlellm.api import AutoModelForCausalLM
from paddlellm.modeling.peft import apply_peft, save_adapter
from paddlellm_peft.common import AdapterError
from paddlellm_peft.lora.multi import AdapterRows, MultiLoraLinear, load_serving_adapters
from peft_testutil import FIX


def test_each_row_gets_its_own_adapters_update():
    rng = np.random.default_rng(0)
    n_in, n_out, ranks = 12, 10, (2, 5)
    base = paddle.nn.Linear(n_in, n_out)
    ups = {k: (rng.normal(size=(n_in, r)).astype("float32"),
               rng.normal(size=(r, n_out)).astype("float32")) for k, r in enumerate(ranks)}
    rows = AdapterRows(len(ranks), max(ranks), paddle.float32)
    layer = MultiLoraLinear(base, rows, ups)
    x = rng.normal(size=(1, 7, n_in)).astype("float32")
    plain = base(paddle.to_tensor(x)).numpy()[0]  # (7, out)

    def want(indices):
        out = plain.copy()
        for n, k in enumerate(indices):
            if k:
                a, b = ups[k - 1]
                out[n] += x[0, n] @ a @ b
        return out

    for indices in ([0, 1, 2, 2, 0, 1, 1], [2] * 7, [1] * 7, [0] * 7, [0, 0, 2, 0, 0, 0, 0]):
        rows.set_rows(indices)
        got = layer(paddle.to_tensor(x)).numpy()[0]
        assert np.abs(got - want(indices)).max() < 1e-4, indices
        assert (rows.single is not None) == (len(set(indices)) == 1 and indices[0] != 0)
    rows.set_rows(None)
    assert np.abs(layer(paddle.to_tensor(x)).numpy()[0] - plain).max() == 0
    rows.set_rows([1] * 7)
    layer.adapter_enabled = False  # the adapter contract: the base output
    assert np.abs(layer(paddle.to_tensor(x)).numpy()[0] - plain).max() == 0
    with pytest.raises(ValueError, match="adapter index out of range 0..2"):
        rows.set_rows([0, 3])


def _adapter(tmp_path, name, **options):
    model = apply_peft(AutoModelForCausalLM.from_pretrained(FIX / "base"), "lora",
                       {"lora_rank": 4, **options})
    rng = np.random.default_rng(1)
    for pname, p in model.named_parameters():
        if "lora_B" in pname:
            p.set_value(paddle.to_tensor(rng.normal(0, 0.2, p.shape).astype("float32")))
    save_adapter(model, tmp_path / name)
    return model.eval(), tmp_path / name


def test_loaded_adapters_give_the_adapted_models_logits(tmp_path):
    one, d1 = _adapter(tmp_path, "one")
    mixed, d2 = _adapter(tmp_path, "mixer", lora_use_mixer=True, rslora=True,
                         target_modules="q_proj,down_proj")
    served = AutoModelForCausalLM.from_pretrained(FIX / "base").eval()
    rows = load_serving_adapters(served, [str(d1), str(d2)])
    ids = paddle.to_tensor(np.random.default_rng(0).integers(3, 60, (1, 9)))
    with paddle.no_grad():
        for k, ref in ((1, one), (2, mixed)):
            rows.set_rows([k] * 9)
            assert np.abs(served(ids).numpy() - ref(ids).numpy()).max() < 1e-4
        rows.set_rows(None)
        base = AutoModelForCausalLM.from_pretrained(FIX / "base").eval()
        assert np.abs(served(ids).numpy() - base(ids).numpy()).max() == 0


def test_loading_refuses_what_it_cannot_serve(tmp_path):
    _, dora = _adapter(tmp_path, "dora", use_dora=True)
    _, ok = _adapter(tmp_path, "ok")
    with pytest.raises(AdapterError, match=f"{dora}: a DoRA adapter .* serve it merged"):
        load_serving_adapters(AutoModelForCausalLM.from_pretrained(FIX / "base"), [str(dora)])
    other = tmp_path / "other"  # an adapter whose tensors do not fit this base
    other.mkdir()
    (other / "adapter_config.json").write_text((ok / "adapter_config.json").read_text())
    from paddlellm_peft.common import read_adapter, write_adapter

    cfg, tensors = read_adapter(ok)
    write_adapter(other, cfg, {k: (np.zeros((v.shape[0], v.shape[1] + 3), "float32")
                                   if "lora_A" in k else v) for k, v in tensors.items()})
    with pytest.raises(AdapterError, match=f"{other}: module .* maps .* in the served model: "
                                           "the adapter was trained on another base"):
        load_serving_adapters(AutoModelForCausalLM.from_pretrained(FIX / "base"), [str(other)])
    cfg = json.loads((ok / "adapter_config.json").read_text())
    write_adapter(other, cfg, {k.replace("q_proj", "nope_proj"): v for k, v in tensors.items()})
    with pytest.raises(AdapterError, match=f"{other}: .*nope_proj"):
        load_serving_adapters(AutoModelForCausalLM.from_pretrained(FIX / "base"), [str(other)])
