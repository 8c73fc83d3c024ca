"""Zero padding: packed sequences give exactly the loss (and gradients) of unpacked ones."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm.modeling.auto import AutoModelForCausalLM
from paddlellm.data.sft import IGNORE_INDEX, Example, pack_examples, packed_batch, pad_batch
from paddlellm.training.loss import batch_loss as forward_loss


def _examples(rng, n, vocab):
    out = []
    for _ in range(n):
        length = int(rng.integers(4, 14))
        ids = rng.integers(1, vocab, length).tolist()
        prompt = int(rng.integers(1, length - 1))
        out.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


@pytest.mark.parametrize("preset, extra", [
    ("qwen-tiny", {}),                      # RoPE, GQA
    ("mistral-tiny", {"sliding_window": 5}),  # sliding window shorter than the sequences
    ("gpt-tiny", {}),                       # learned positions
    ("bloom-tiny", {}),                     # ALiBi
])
def test_packed_loss_equals_unpacked_loss(preset, extra):
    paddle.seed(0)
    model = AutoModelForCausalLM.from_config(preset, vocab_size=64, **extra)
    examples = _examples(np.random.default_rng(1), 9, 64)
    bins = pack_examples(examples, max_length=32)
    assert len(bins) < len(examples)  # several examples really share a row
    packed = packed_batch(bins, pad_id=0)
    padded = pad_batch(examples, pad_id=0)

    loss_p, n_p = forward_loss(model, packed)
    loss_p.backward()
    grads_p = [p.grad.numpy().copy() for p in model.parameters()]
    model.clear_gradients()
    loss_u, n_u = forward_loss(model, padded)
    loss_u.backward()
    assert n_p == n_u
    np.testing.assert_allclose(float(loss_p), float(loss_u), rtol=1e-5)
    for gp, p in zip(grads_p, model.parameters()):
        np.testing.assert_allclose(gp, p.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_without_segments_packing_would_leak_across_examples():
    paddle.seed(0)
    model = AutoModelForCausalLM.from_config("qwen-tiny", vocab_size=64)
    examples = _examples(np.random.default_rng(2), 6, 64)
    packed = packed_batch(pack_examples(examples, 32), pad_id=0)
    ids, pos = paddle.to_tensor(packed["input_ids"]), paddle.to_tensor(packed["position_ids"])
    with paddle.no_grad():
        isolated = model(ids, position_ids=pos, segment_ids=paddle.to_tensor(packed["segment_ids"]))
        leaky = model(ids, position_ids=pos)  # same positions, one causal mask over the row
    first = packed["segment_ids"][0] == 0
    np.testing.assert_allclose(isolated.numpy()[0, first], leaky.numpy()[0, first], rtol=1e-5,
                               atol=1e-5)  # the first example sees nothing else either way
    assert np.abs(isolated.numpy()[0, ~first] - leaky.numpy()[0, ~first]).max() > 1e-3
