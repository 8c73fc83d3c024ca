"""Large tensors are merged in row blocks: the result must not depend on it (deterministic
methods), random ones stay reproducible, and bf16 / LoRA inputs are read block-wise too."""
from __future__ import annotations

import numpy as np
import pytest

from merge_testutil import assert_state_close, expected, fx, read_all
from paddlellm_merge import engine
from paddlellm_merge.engine import merge
from paddlellm_merge.spec import MergeSpec, ModelInput


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 100)  # most fixture tensors become 3+ blocks


def _ties():
    return MergeSpec("ties", [ModelInput(fx("m1"), {"weight": 0.6, "density": 0.5}),
                              ModelInput(fx("m2"), {"weight": 0.9, "density": 0.3})], fx("base"))


def test_blockwise_ties_linear_slerp_lora_match_references(tmp_path, small_blocks):
    log = lambda s: None  # noqa: E731
    merge(_ties(), str(tmp_path / "ties"), log=log)
    assert_state_close(read_all(str(tmp_path / "ties")), expected("ties"))
    merge(MergeSpec("linear", [ModelInput(fx("m1"), {"weight": 0.3}),
                               ModelInput(fx("m2"), {"weight": 0.7})]), str(tmp_path / "lin"),
          log=log)
    assert_state_close(read_all(str(tmp_path / "lin")), expected("linear"))
    merge(MergeSpec("slerp", [ModelInput(fx("base")), ModelInput(fx("m1"))], None, {"t": 0.3}),
          str(tmp_path / "slerp"), log=log)
    assert_state_close(read_all(str(tmp_path / "slerp")), expected("slerp_mergekit"))
    merge(MergeSpec("linear", [ModelInput(fx("base") + "+" + fx("lora_a1"), {"weight": 1})]),
          str(tmp_path / "lora"), log=log)
    assert_state_close(read_all(str(tmp_path / "lora")), expected("lora_a1_merged"), atol=1e-5)


def test_trim_ties_at_the_cutoff_keep_exactly_k_in_row_major_order(tmp_path, small_blocks):
    """Equal magnitudes at the cut-off (common in bf16) keep exactly k entries either way."""
    from paddlellm_merge.methods.task_arithmetic import TIES

    base = np.zeros((30, 10), np.float32)
    x = np.where(np.arange(300).reshape(30, 10) % 3 == 0, 1.0, 0.5).astype(np.float32)
    params = {"weight": [1.0], "density": [0.5], "normalize": True, "lambda": 1.0,
              "rescale": False, "rescale_norm": "inverse", "consensus": "sum"}
    whole = TIES.merge_tensor("w", [x], base, {**params, "_rows": (0, 30)})
    assert np.count_nonzero(whole) == 150
    bounds = [(r, min(r + 7, 30)) for r in range(0, 30, 7)]
    p = TIES.prepare("w", params, bounds, lambda r0, r1: ([x[r0:r1]], base[r0:r1]))
    blocks = np.concatenate([TIES.merge_tensor("w", [x[a:b]], base[a:b], {**p, "_rows": (a, b)})
                             for a, b in bounds])
    np.testing.assert_array_equal(blocks, whole)


def test_blockwise_dare_is_reproducible_across_processes(tmp_path, small_blocks):
    def run(out, n):
        spec = MergeSpec("della", [ModelInput(fx("m1"), {"weight": 0.7, "density": 0.4}),
                                   ModelInput(fx("m2"), {"weight": 0.5, "density": 0.6})],
                         fx("base"), {"seed": 3, "epsilon": 0.1})
        merge(spec, str(tmp_path / out), n_process=n, log=lambda s: None)
        return read_all(str(tmp_path / out))

    one, two = run("a", 1), run("b", 2)
    for k in one:
        np.testing.assert_array_equal(one[k], two[k], err_msg=k)


def test_blockwise_reads_bf16_inputs(tmp_path, small_blocks):
    from paddlellm.api import save_state_dict
    import shutil

    for name in ("m1", "m2"):
        d = tmp_path / name
        save_state_dict(read_all(fx(name)), d, dtype="bfloat16")
        shutil.copy(fx(name, "config.json"), d / "config.json")
    spec = MergeSpec("linear", [ModelInput(str(tmp_path / "m1"), {"weight": 0.3}),
                                ModelInput(str(tmp_path / "m2"), {"weight": 0.7})])
    merge(spec, str(tmp_path / "o"), log=lambda s: None)
    got, want = read_all(str(tmp_path / "o")), expected("linear")
    for k in want:  # inputs were rounded to bf16: agreement to bf16 precision
        np.testing.assert_allclose(got[k], want[k], rtol=2 ** -7, atol=2e-3, err_msg=k)
