"""paddlellm.modeling.generation: options, eos/stop handling, sampling, cache vs no cache."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from models_testutil import NAMES, reference
from paddlellm.modeling.generation import GenerationConfig, filter_top_k_top_p, make_config

T = 20  # fixture prompt length


@pytest.mark.parametrize("name", NAMES)
def test_repetition_penalty_matches_transformers(name, load):
    ref, model = reference(name), load(name)
    out = model.generate(ref["batch_ids"], attention_mask=ref["batch_mask"], max_new_tokens=8,
                         repetition_penalty=1.5, eos_token_id=None).numpy()
    np.testing.assert_array_equal(out[:, T:], ref["greedy_rep_batch"])


def test_without_cache_equals_with_cache(load):
    ref, model = reference("mistral"), load("mistral")
    kw = dict(attention_mask=ref["batch_mask"], max_new_tokens=6, eos_token_id=None)
    np.testing.assert_array_equal(model.generate(ref["batch_ids"], use_cache=False, **kw).numpy(),
                                  model.generate(ref["batch_ids"], **kw).numpy())


def test_eos_finishes_rows_and_pads(load):
    ref, model = reference("llama"), load("llama")
    greedy = ref["greedy_batch"]
    eos = next(int(t) for t in greedy[0, 1:] if t not in greedy[1])  # only row 0 meets it
    out = model.generate(ref["batch_ids"], attention_mask=ref["batch_mask"], max_new_tokens=8,
                         eos_token_id=[eos, 10**6], pad_token_id=1).numpy()[:, T:]
    first = greedy[0].tolist().index(eos)
    np.testing.assert_array_equal(out[0, :first + 1], greedy[0, :first + 1])
    assert (out[0, first + 1:] == 1).all()
    np.testing.assert_array_equal(out[1], greedy[1])


def test_generation_stops_when_every_row_is_done(load):
    ref, model = reference("gpt2"), load("gpt2")
    first = int(ref["greedy_single"][0, 0])
    out = model.generate(ref["single_ids"], max_new_tokens=8, eos_token_id=first).numpy()
    assert out.shape == (1, T + 1) and out[0, -1] == first


def test_min_new_tokens_suppresses_eos(load):
    ref, model = reference("gpt2"), load("gpt2")
    first = int(ref["greedy_single"][0, 0])
    out = model.generate(ref["single_ids"], max_new_tokens=4, min_new_tokens=4,
                         eos_token_id=first).numpy()
    assert out.shape == (1, T + 4) and first not in out[0, T:].tolist()


def test_stop_sequences(load):
    ref, model = reference("qwen2"), load("qwen2")
    greedy = ref["greedy_single"][0].tolist()
    stop = greedy[1:3]
    out = model.generate(ref["single_ids"], max_new_tokens=8, eos_token_id=None,
                         stop_sequences=[[10**6], stop]).numpy()[0, T:]
    assert out.tolist() == greedy[:3]


def test_sampling_is_reproducible_and_seeded(load):
    ref, model = reference("qwen2"), load("qwen2")
    kw = dict(attention_mask=ref["batch_mask"], max_new_tokens=8, decode_strategy="sampling",
              temperature=1.5, top_k=20, top_p=0.95, eos_token_id=None)
    a = model.generate(ref["batch_ids"], seed=7, **kw).numpy()
    b = model.generate(ref["batch_ids"], seed=7, **kw).numpy()
    np.testing.assert_array_equal(a, b)
    others = [model.generate(ref["batch_ids"], seed=s, **kw).numpy() for s in (8, 9, 10)]
    assert any((o != a).any() for o in others)


def test_sampling_with_top_k_1_is_greedy(load):
    ref, model = reference("bloom"), load("bloom")
    out = model.generate(ref["batch_ids"], attention_mask=ref["batch_mask"], max_new_tokens=8,
                         decode_strategy="sampling", top_k=1, seed=0, eos_token_id=None).numpy()
    np.testing.assert_array_equal(out[:, T:], ref["greedy_batch"])


def test_sampling_follows_the_softmax():
    from paddlellm.modeling.generation import _sample

    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    rng = np.random.default_rng(0)
    draws = np.concatenate([_sample(logits, rng) for _ in range(20000)])
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_top_k_top_p_filtering_follows_transformers():
    logits = np.array([[1.0, 4.0, 2.0, 3.0, 0.0]])
    np.testing.assert_array_equal(np.isfinite(filter_top_k_top_p(logits, 2, 1.0)),
                                  [[False, True, False, True, False]])
    probs = np.exp(logits) / np.exp(logits).sum()  # sorted ascending: .01 .03 .09 .23 .64
    p = float(probs[0, 1] + 1e-3)  # nucleus: only the top token's mass is needed... almost
    kept = np.isfinite(filter_top_k_top_p(logits, 0, p))
    np.testing.assert_array_equal(kept, [[False, True, False, True, False]])
    kept = np.isfinite(filter_top_k_top_p(logits, 0, float(probs[0, 1]) - 1e-3))
    np.testing.assert_array_equal(kept, [[False, True, False, False, False]])


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown decode_strategy 'greedy'"):
        GenerationConfig(decode_strategy="greedy")
    with pytest.raises(TypeError, match="unknown generation options: top_q"):
        make_config(top_q=0.5)
    with pytest.raises(ValueError, match="beam_search needs num_beams >= 2"):
        GenerationConfig(decode_strategy="beam_search", num_beams=1)
    with pytest.raises(ValueError, match="num_beams=3 needs decode_strategy='beam_search'"):
        make_config(num_beams=3, decode_strategy="sampling")
    assert make_config(do_sample=True).decode_strategy == "sampling"
    assert make_config(stop_token_ids=[3, 4]).eos_ids == [3, 4]


def test_eos_defaults_to_the_model_config(load):
    model = load("llama")
    assert make_config(model).eos_token_id == model.config.eos_token_id


def test_generation_config_json_sets_default_eos(tmp_path):
    import json
    import shutil

    from models_testutil import FIXTURES
    from paddlellm import AutoModelForCausalLM

    ref = reference("llama")
    shutil.copytree(FIXTURES / "llama", tmp_path / "m")
    eos = int(ref["greedy_single"][0, 1])
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, 10**6]}))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    out = model.generate(ref["single_ids"], max_new_tokens=8).numpy()[0, T:]
    assert out.tolist() == ref["greedy_single"][0, :2].tolist()
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "generation_config.json").read_text())
    assert saved["eos_token_id"] == [eos, 10**6]


def _hf_top_k_top_p(logits, top_k, top_p):
    """transformers' TopK then TopP warpers, written out with a full sort."""
    logits = logits.copy()
    if top_k:
        logits[logits < np.sort(logits, -1)[:, -top_k][:, None]] = -np.inf
    if top_p < 1:
        order = np.argsort(logits, -1, kind="stable")
        s = np.take_along_axis(logits, order, -1)
        p = np.exp(s - s.max(-1, keepdims=True))
        remove = np.cumsum(p / p.sum(-1, keepdims=True), -1) <= 1 - top_p
        remove[:, -1] = False
        mask = np.zeros_like(remove)
        np.put_along_axis(mask, order, remove, -1)
        logits[mask] = -np.inf
    return logits


@pytest.mark.parametrize("vocab", [50, 5000])
@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_top_k_top_p_equals_the_full_sort(vocab, scale):
    x = np.random.default_rng(vocab).normal(size=(3, vocab)) * scale
    for k, p in ((0, 0.9), (0, 0.5), (40, 0.95), (0, 0.999), (5, 1.0)):
        np.testing.assert_array_equal(np.isfinite(filter_top_k_top_p(x, k, p)),
                                      np.isfinite(_hf_top_k_top_p(x, k, p)))


def test_longrope_generation_recomputes_the_cache_when_crossing(load):
    """Phi-3: from 12 prompt tokens, generation crosses original_max_position_embeddings (16)."""
    ref, model = reference("phi3_longrope"), load("phi3_longrope")
    out = model.generate(ref["single_ids"][:, :12], max_new_tokens=8, eos_token_id=None).numpy()
    np.testing.assert_array_equal(out[:, 12:], ref["greedy_cross"])


def test_right_padding_warns(load):
    ref, model = reference("llama"), load("llama")
    mask = np.ones_like(ref["batch_ids"])
    mask[1, -3:] = 0
    with pytest.warns(UserWarning, match="padding on the right"):
        model.generate(ref["batch_ids"], attention_mask=mask, max_new_tokens=1)
