"""Sparsification steps: exact where deterministic, statistically right and seeded where random."""
from __future__ import annotations

import numpy as np
import pytest

from merge_testutil import fx, read_all
from paddlellm_merge import MergeError
from paddlellm_merge.engine import merge
from paddlellm_merge.methods.task_arithmetic import DARE_LINEAR, DELLA
from paddlellm_merge.sparsify import dare, magprune, magprune_probs, tensor_rng, trim


def _delta(shape=(200, 500), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_trim_keeps_exactly_the_largest_magnitudes():
    d = _delta((40, 50))
    out = trim(d, 0.2)
    k = int(0.2 * d.size)
    kept = np.flatnonzero(out)
    assert kept.size == k
    assert np.abs(d).reshape(-1)[kept].min() >= np.sort(np.abs(d).reshape(-1))[-k]
    np.testing.assert_array_equal(out.reshape(-1)[kept], d.reshape(-1)[kept])
    assert np.count_nonzero(trim(d, 1e-9)) == 1  # positive density keeps at least one entry
    assert not np.any(trim(d, 0.0))


def test_dare_drop_fraction_and_rescale():
    d = _delta()
    out = dare(d, 0.3, tensor_rng(7, "w", 0))
    kept = out != 0
    assert abs(kept.mean() - 0.3) < 0.006  # 100k Bernoulli(0.3): sd 0.0014
    np.testing.assert_allclose(out[kept], d[kept] / 0.3, rtol=1e-6)
    assert abs(out.sum() - d.sum()) / np.abs(d).sum() < 0.02  # unbiased in expectation
    again = dare(d, 0.3, tensor_rng(7, "w", 0))
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, dare(d, 0.3, tensor_rng(8, "w", 0)))
    assert not np.array_equal(out, dare(d, 0.3, tensor_rng(7, "w", 1)))
    no_rescale = dare(d, 0.3, tensor_rng(7, "w", 0), rescale=False)
    np.testing.assert_array_equal(no_rescale[kept], d[kept])


def test_rescale_norm_l1_restores_the_l1_norm():
    d = _delta((50, 60))
    out = dare(d, 0.5, tensor_rng(0, "x", 0), rescale_norm="l1")
    np.testing.assert_allclose(np.abs(out).sum(), np.abs(d).sum(), rtol=1e-4)


def test_magprune_probabilities_rank_by_magnitude_per_row():
    d = _delta((3, 101))
    p = magprune_probs(d, 0.5, 0.2)
    for row, prow in zip(d, p):
        order = np.argsort(np.abs(row))
        np.testing.assert_allclose(prow[order], np.linspace(0.3, 0.7, 101), atol=1e-6)


def test_magprune_keep_rate_rescale_and_bias_to_large_entries():
    d = _delta((100, 1000))
    out = magprune(d, 0.4, 0.15, tensor_rng(3, "w", 0))
    kept = out != 0
    assert abs(kept.mean() - 0.4) < 0.006
    probs = magprune_probs(d, 0.4, 0.15)
    np.testing.assert_allclose(out[kept], d[kept] / probs[kept], rtol=1e-5)
    big = np.abs(d) > np.quantile(np.abs(d), 0.9)
    small = np.abs(d) < np.quantile(np.abs(d), 0.1)
    assert kept[big].mean() > 0.5 > 0.3 > kept[small].mean()
    with pytest.raises(MergeError, match=r"density \+/- epsilon must lie in \(0, 1\)"):
        magprune(d, 0.9, 0.2, tensor_rng(0, "w", 0))


def test_random_methods_are_seeded_per_tensor():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 40)).astype(np.float32)
    xs = [base + rng.normal(size=base.shape).astype(np.float32) for _ in range(2)]
    params = {"weight": [0.5, 0.5], "density": [0.5, 0.5], "normalize": False, "lambda": 1.0,
              "rescale": True, "rescale_norm": "inverse", "seed": 11, "epsilon": [0.1, 0.1],
              "consensus": "sum"}
    for method in (DARE_LINEAR, DELLA):
        a = method.merge_tensor("t", xs, base, params)
        np.testing.assert_array_equal(a, method.merge_tensor("t", xs, base, params))
        assert not np.array_equal(a, method.merge_tensor("u", xs, base, params))
        assert not np.array_equal(a, method.merge_tensor("t", xs, base, {**params, "seed": 12}))


def test_dare_ties_checkpoint_reproducible_across_processes(tmp_path, quiet):
    from paddlellm_merge.spec import MergeSpec, ModelInput

    def run(out, n):
        spec = MergeSpec("dare_ties", [ModelInput(fx("m1"), {"weight": 0.7, "density": 0.4}),
                                       ModelInput(fx("m2"), {"weight": 0.5, "density": 0.6})],
                         fx("base"), {"seed": 5})
        merge(spec, str(tmp_path / out), n_process=n, log=quiet)
        return read_all(str(tmp_path / out))

    one, two = run("a", 1), run("b", 2)
    for k in one:
        np.testing.assert_array_equal(one[k], two[k], err_msg=k)
    base, m1 = read_all(fx("base")), read_all(fx("m1"))
    k = "model.layers.1.mlp.up_proj.weight"
    assert not np.allclose(one[k], base[k]) and not np.allclose(one[k], m1[k])
