"""The reference model: a frozen copy for full-parameter training, the adapters switched off
under PEFT (no second copy of the weights)."""
from __future__ import annotations

import numpy as np
import paddle

from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.modeling.prepare import DEMO_MODEL_DIR
from paddlellm.modeling.peft import apply_peft
from paddlellm_align.data import pair_batch, parse_record, tokenize_records
from paddlellm_align.demo import demo_preferences
from paddlellm_align.logps import sequence_logps
from paddlellm_align.stage import Reference


def load():
    return AutoModelForCausalLM.from_pretrained(str(DEMO_MODEL_DIR))


def batch():
    tok = AutoTokenizer.from_pretrained(str(DEMO_MODEL_DIR))
    records = [parse_record(r, "demo", False) for r in demo_preferences(4, seed=5)]
    return pair_batch(tokenize_records(tok, records, 128), 256, tok.pad_token_id)


def tensor_ids(*objects) -> set[int]:
    """Ids of every parameter and buffer tensor reachable from ``objects``."""
    out = set()
    for obj in objects:
        if obj is not None:
            out |= {id(p) for p in obj.parameters()} | {id(b) for b in obj.buffers()}
    return out


def test_peft_reference_is_the_base_with_adapters_off_and_no_copy():
    paddle.seed(0)
    model = apply_peft(load(), "lora", {"lora_rank": 4})
    for name, p in model.named_parameters():
        if "lora_B" in name:  # adapters that change the output
            p.set_value(paddle.full(p.shape, 0.05, p.dtype))
    b = batch()
    ref = Reference.build(model, peft=True)
    assert ref.copy is None
    assert tensor_ids(ref.policy, ref.copy) == tensor_ids(model)  # nothing duplicated
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) < 1.1 * sum(
        int(np.prod(p.shape)) for p in load().parameters())
    with paddle.no_grad():
        policy = sequence_logps(model, b)[0].numpy()
        base = sequence_logps(load(), b)[0].numpy()
    reference = ref(b).numpy()
    np.testing.assert_allclose(reference, base, rtol=1e-5, atol=1e-4)
    assert np.abs(policy - base).max() > 0.1  # the adapters do change the policy
    # adapters are back on afterwards
    with paddle.no_grad():
        np.testing.assert_allclose(sequence_logps(model, b)[0].numpy(), policy, rtol=1e-6)


def test_full_parameter_reference_is_a_frozen_copy():
    model = load()
    b = batch()
    ref = Reference.build(model, peft=False)
    assert not tensor_ids(ref.copy) & tensor_ids(model)
    assert all(p.stop_gradient for p in ref.copy.parameters())
    before = ref(b).numpy()
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=model.parameters())
    loss = -sequence_logps(model, b)[0].sum()
    loss.backward()
    opt.step()
    with paddle.no_grad():
        moved = sequence_logps(model, b)[0].numpy()
    assert np.abs(moved - before).max() > 0.1  # the policy moved, the reference did not
    np.testing.assert_allclose(ref(b).numpy(), before, rtol=1e-6)
    ref.release_copy()
    assert ref.copy is None
