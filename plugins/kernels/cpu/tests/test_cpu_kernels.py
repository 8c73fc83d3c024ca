"""paddlellm-kernels-cpu: every instruction set against the float64 conformance cases and the
quant plugin's own math, selection through the core's seams, greedy outputs through the
engine identical to the reference paths, and a failed build that blocks nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from paddlellm.interfaces import AttentionSpec, LinearSpec


# --- paged attention ---------------------------------------------------------------------------

def test_paged_attention_passes_the_conformance_check(manager, isa, monkeypatch):
    from paddlellm.testing.attention import check_kernel
    from paddlellm_kernels_cpu import build
    from paddlellm_kernels_cpu.attention import kernel

    for threads in ("1", "2"):  # the long case spreads its items over threads
        monkeypatch.setenv("PADDLELLM_NUM_THREADS", threads)
        results = check_kernel(kernel, tolerance=1e-5)
        supported = [r for r in results if r.supported]
        assert {r.case for r in supported} == {"paged-decode", "paged-prefill", "paged-chunk",
                                               "paged-window", "paged-softcap", "paged-mqa-long",
                                               "paged-long-prefill", "paged-long-window"}
        assert all(r.passed for r in supported), [(r.case, r.rel_error, r.error) for r in supported]
    assert build.num_threads() == 2


def test_threaded_mixed_prefill_is_exact_every_time(ops):
    """Two prefills in one call (5 + 23 tokens) spread over 2 threads, 30 times: items are
    handed out once each. (With ``omp for schedule(dynamic)`` the loop bound to libgomp while
    Paddle's libiomp5 ran the team, so threads redid each other's items and most calls were
    wrong — the engine's greedy tokens then differed from the reference kernel's.)"""
    from paddlellm_kernels_cpu import build

    rng = np.random.default_rng(0)
    hq, hkv, d, bs, lens = 4, 2, 32, 4, (5, 23)
    n = sum(lens)
    q, k, v = (rng.standard_normal((1, n, h, d)).astype("float32") for h in (hq, hkv, hkv))
    tables = np.zeros((2, 8), np.int64)
    tables[0, :2], tables[1, :6] = [3, 7], [10, 11, 12, 13, 14, 20]
    slots = np.array([tables[s, i // bs] * bs + i % bs for s, m in enumerate(lens)
                      for i in range(m)], np.int64)
    info = np.array([[0, 5, 5], [5, 23, 23]], np.int64)
    want = np.zeros_like(q)
    for start, m, _ in info:
        for i in range(m):
            for h in range(hq):
                keys = k[0, start:start + i + 1, h // (hq // hkv)]
                scores = keys @ q[0, start + i, h] * d ** -0.5
                p = np.exp(scores - scores.max())
                want[0, start + i, h] = (p / p.sum()) @ v[0, start:start + i + 1, h // (hq // hkv)]
    for _ in range(30):
        pools = [paddle.zeros([64 * bs, hkv, d]) for _ in range(2)]
        got = ops.plk_paged_attention(
            paddle.to_tensor(q), paddle.to_tensor(k), paddle.to_tensor(v), *pools,
            paddle.to_tensor(slots), paddle.to_tensor(tables), paddle.to_tensor(info),
            d ** -0.5, 0.0, 0, bs, 2, build.isa_code(), True)[0].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_selected_for_paged_calls_only(manager, ops):
    from paddlellm.modeling.attention import get_attention_kernel

    assert get_attention_kernel(AttentionSpec(cache="paged"), backend="cpu").name == "cpu"
    for spec in (AttentionSpec(), AttentionSpec(cache="contiguous"),
                 AttentionSpec(cache="paged", alibi=True), AttentionSpec(cache="paged", dtype="bfloat16"),
                 AttentionSpec(cache="paged", training=True)):
        assert get_attention_kernel(spec, backend="cpu").name == "reference", spec
    assert get_attention_kernel(AttentionSpec(cache="paged"), backend="gpu").name == "reference"


def test_alibi_call_is_passed_to_the_reference_kernel(manager, ops):
    """A call the compiled kernel does not implement still gets the right answer."""
    from paddlellm.testing.attention import Case, _run_paged, case_inputs, expected_output
    from paddlellm_kernels_cpu.attention import kernel

    case = Case("alibi", AttentionSpec(head_dim=16, cache="paged", alibi=True), batch=2,
                q_len=2, k_len=6)
    inputs = case_inputs(case)
    t = {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    got = _run_paged(kernel, case, t.pop("q"), t.pop("k"), t.pop("v"), t).numpy()
    np.testing.assert_allclose(got, expected_output(case, inputs), rtol=1e-5, atol=1e-5)


def test_a_pool_with_its_own_write_is_written_through_it(manager, ops, monkeypatch):
    """The operator writes the engine's plain float pool itself; a layer class with its own
    ``write`` (another storage) gets its ``write`` called instead, and the result is the same."""
    from paddlellm.modeling import kv_manager
    from paddlellm.testing.attention import Case, _run_paged, case_inputs, expected_output
    from paddlellm_kernels_cpu.attention import kernel

    writes = []

    class RecordingLayer(kv_manager.PagedLayer):
        def write(self, k, v):
            writes.append(k.shape[1])
            super().write(k, v)

    case = Case("chunk", AttentionSpec(head_dim=16, cache="paged"), batch=3, q_len=3, k_len=10)
    inputs = case_inputs(case)
    monkeypatch.setattr(kv_manager, "PagedLayer", RecordingLayer)  # what PagedBatch builds
    t = {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    got = _run_paged(kernel, case, t.pop("q"), t.pop("k"), t.pop("v"), t).numpy()
    np.testing.assert_allclose(got, expected_output(case, inputs), rtol=1e-5, atol=1e-5)
    assert writes == [sum(c - 3 for c in (10, 9, 8)), 9]  # the cached prefixes, then the call


# --- weight-only matmul --------------------------------------------------------------------------

@pytest.mark.parametrize("bits,group_size,n_in,n_out", [
    (8, -1, 512, 1408), (8, 64, 256, 300), (8, 48, 517, 7),  # a shorter last group, odd width
    (4, -1, 1408, 512), (4, 128, 512, 260), (4, 32, 517, 13),
    (8, -1, 5003, 9), (4, -1, 4501, 5),  # rows longer than one int32 accumulation chunk
])
def test_weight_only_matmul_equals_the_layers_paddle_math(manager, isa, bits, group_size, n_in, n_out):
    from paddlellm_kernels_cpu.linear import MAX_ROWS, kernel
    from paddlellm_quant.layers import WeightOnlyLinear

    paddle.seed(0)
    layer = WeightOnlyLinear.from_linear(paddle.nn.Linear(n_in, n_out), bits=bits,
                                         group_size=group_size)
    w = layer.dequantize()  # (out, in) float32: the layer's own math
    rng = np.random.default_rng(0)
    for rows in (1, 3, MAX_ROWS):
        x = paddle.to_tensor(rng.standard_normal((1, rows, n_in)).astype(np.float32))
        want = paddle.matmul(x, w, transpose_y=True).numpy()
        got = kernel(x, layer.qweight, layer.scales, bits=bits, group_size=group_size).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    x = paddle.ones([MAX_ROWS + 1, n_in])  # a prefill: declined, the layer's GEMM runs
    assert kernel(x, layer.qweight, layer.scales, bits=bits, group_size=group_size) is None


def test_weight_only_matmul_keeps_outliers_extremes_and_nan_rows(manager, isa):
    """x is taken as two int16 terms per row: an entry 10^4 times the others, weights at
    -128/127 over 6000 columns (int32 partial sums near their limit) stay float-accurate; a row
    with NaN or inf gives NaN outputs and leaves the other rows alone."""
    from paddlellm_kernels_cpu.linear import kernel

    rng = np.random.default_rng(3)
    n_in, n_out = 6000, 6
    q = rng.choice(np.array([-128, 127], np.int8), (n_out, n_in))
    scales = np.full((n_out, 1), 0.01, np.float32)
    x = rng.standard_normal((4, n_in)).astype(np.float32)
    x[0, 17] = 3e4  # an outlier
    x[1] = np.abs(x[1]) * 30000 / np.abs(x[1]).max()  # every product near the int16 x int8 limit
    x[1] *= np.sign(q[0].astype(np.float32))
    x[2, 5] = np.nan
    x[3, 9] = np.inf
    want = x.astype(np.float64) @ (q.astype(np.float64) * scales).T
    got = kernel(paddle.to_tensor(x), paddle.to_tensor(q), paddle.to_tensor(scales),
                 bits=8, group_size=-1).numpy()
    np.testing.assert_allclose(got[:2], want[:2], rtol=0, atol=2e-6 * np.abs(want[:2]).max())
    assert np.isnan(got[2:]).all()


def test_quant_layer_uses_the_seam_and_keeps_bias_and_pre_scale(manager, ops):
    from paddlellm.modeling.linear import get_linear_kernel
    from paddlellm_quant.layers import WeightOnlyLinear

    assert get_linear_kernel(LinearSpec(bits=8, in_features=64, out_features=32), "cpu").name == "cpu"
    assert get_linear_kernel(LinearSpec(bits=4, group_size=33, in_features=64), "cpu") is None
    assert get_linear_kernel(LinearSpec(dtype="bfloat16"), "cpu") is None
    assert get_linear_kernel(LinearSpec(), "gpu") is None
    paddle.seed(1)
    q = np.random.default_rng(1).integers(-8, 8, (32, 64)).astype(np.int8)
    scales = np.random.default_rng(2).random((32, 1)).astype(np.float32) + 0.1
    layer = WeightOnlyLinear.from_quantized(q, scales, bits=4, group_size=-1,
                                            bias=paddle.randn([32]), pre_scale=np.linspace(0.5, 2, 64))
    x = paddle.randn([2, 64])
    with paddle.no_grad():
        got = layer(x).numpy()
    assert layer._kernel_cache[1] is not None and layer._kernel_cache[1].name == "cpu"
    w = layer.dequantize_weight()  # (in, out), pre_scale folded in
    want = (paddle.matmul(x, w) + layer.bias).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    x.stop_gradient = False  # gradients must flow: the kernel (no backward) stays out
    assert layer._linear_kernel(x) is None


# --- float32 products (the models' own layers at decode) -----------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
def test_linear_kernel_passes_the_conformance_check(manager, isa, threads, monkeypatch):
    from paddlellm.testing.linear import check_linear_kernel
    from paddlellm_kernels_cpu import build
    from paddlellm_kernels_cpu.linear import kernel

    monkeypatch.setattr(build, "num_threads", lambda: threads)
    results = check_linear_kernel(kernel)
    assert all(r.supported for r in results)
    assert [r.case for r in results if not r.passed] == []
    assert not any(r.error == "declined" for r in results)  # up to 16 rows: all served


@pytest.mark.parametrize("blas", ["1", "0"])
def test_float_products_of_many_rows_with_and_without_blas(ops, blas):
    """From a few rows on, float32 products (the fused layer's and the linear kernel's) go to
    Paddle's MKL ``cblas_sgemm`` when the process has it; without it
    (``PADDLELLM_CPU_KERNELS_BLAS=0``, or a Paddle build without MKL) the compiled product
    serves every row count. Both equal float64 at every row count, bias or not, both layouts."""
    code = textwrap.dedent("""
        import numpy as np, paddle
        from paddlellm_kernels_cpu import build
        ops = build.ops()
        rng = np.random.default_rng(0)
        worst = 0.0
        print(build.blas())
        for rows in (1, 5, 6, 16, 40):
            for transposed in (False, True):
                for with_bias in (False, True):
                    x = rng.standard_normal((rows, 96)).astype("float32")
                    w = rng.standard_normal((96, 130)).astype("float32")
                    b = rng.standard_normal(130).astype("float32")
                    want = x.astype(np.float64) @ w + (b if with_bias else 0)
                    got = ops.plk_float_matmul(
                        paddle.to_tensor(x), paddle.to_tensor(w.T.copy() if transposed else w),
                        paddle.to_tensor(b if with_bias else np.zeros(0, "float32")),
                        transposed, 2, build.isa_code()).numpy()
                    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
        print(worst)
    """)
    env = {**os.environ, "PADDLELLM_CPU_KERNELS_BLAS": blas}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == ("True" if blas == "1" else "False")  # this Paddle build ships MKL
    assert float(lines[-1]) < 1e-5


def test_linear_check_catches_a_wrong_kernel(manager, ops):
    """The check can fail: a kernel off by one column's bias, or with the layouts swapped."""
    from paddlellm.testing.linear import check_linear_kernel
    from paddlellm_kernels_cpu.linear import kernel

    class Swapped:
        def supports(self, spec):
            return spec.bits == 32

        def __call__(self, x, w, bias, *, bits, group_size, transposed=False):
            return kernel(x, w, bias, bits=bits, group_size=group_size, transposed=not transposed)

    class Biased:
        def supports(self, spec):
            return spec.bits == 8

        def __call__(self, x, q, scales, *, bits, group_size):
            y = kernel(x, q, scales, bits=bits, group_size=group_size)
            return y + 1e-3 * float(paddle.abs(y).max())

    swapped = check_linear_kernel(Swapped())
    assert any(r.supported and not r.passed for r in swapped)
    assert all(not r.passed for r in check_linear_kernel(Biased()) if r.supported)


def test_model_layers_use_the_float_kernel_only_without_gradient(manager, ops, monkeypatch):
    from paddlellm import AutoModelForCausalLM
    from paddlellm_kernels_cpu import linear as cpu_linear

    calls = []
    real = cpu_linear.CpuWeightOnlyLinear.__call__

    def counting(self, x, w, b, **kw):
        y = real(self, x, w, b, **kw)
        calls.append((kw["bits"], kw.get("transposed", False), y is not None))
        return y

    monkeypatch.setattr(cpu_linear.CpuWeightOnlyLinear, "__call__", counting)
    paddle.seed(5)
    for preset, tied in (("llama-tiny", False), ("qwen-tiny", True)):
        model = AutoModelForCausalLM.from_config(preset, tie_word_embeddings=tied)
        assert model.config.tie_embeddings is tied
        model.eval()
        ids = paddle.to_tensor(np.random.default_rng(6).integers(0, model.config.vocab_size, (2, 5)))
        calls.clear()
        with paddle.no_grad():
            fast = model(ids).numpy()
        n_linear = sum(isinstance(m, paddle.nn.Linear) for m in model.sublayers())
        assert len(calls) == n_linear + (1 if tied else 0)
        assert all(bits == 32 and served for bits, _, served in calls)
        assert any(t for _, t, _ in calls) is tied  # the tied head: the (vocab, hidden) layout
        calls.clear()
        with paddle.no_grad():  # a long prefill: declined, Paddle's GEMM runs
            model(paddle.concat([ids] * 4, axis=1))
        assert calls and not any(served for *_, served in calls)
        monkeypatch.setenv("PADDLELLM_CPU_KERNELS", "0")
        with paddle.no_grad():
            plain = model(ids).numpy()
        monkeypatch.delenv("PADDLELLM_CPU_KERNELS")
        np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
        model.train()  # training: gradients flow through every product, no kernel asked
        calls.clear()
        loss = model(ids).mean()
        loss.backward()
        assert calls == []
        assert model.model.layers[0].mlp.down_proj.weight.grad is not None


# --- through the engine --------------------------------------------------------------------------

def _greedy(engine, prompts, n=12):
    from paddlellm.engine import SamplingParams

    outs = engine.generate(prompts, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
    return [o["token_ids"] for o in outs]


@pytest.mark.parametrize("quant_type", [None, "weight_only_int8", "weight_only_int4"])
def test_engine_greedy_outputs_identical_to_the_reference_paths(manager, ops, monkeypatch, quant_type):
    from paddlellm import AutoModelForCausalLM
    from paddlellm.modeling.attention import get_attention_kernel
    from paddlellm.engine import LLMEngine
    from paddlellm.plugin.manager import get_registry

    paddle.seed(3)
    model = AutoModelForCausalLM.from_config("llama-tiny")
    if quant_type:
        get_registry().load("quantizer", quant_type).quantize(model, quant_type, None, {})
    rng = np.random.default_rng(4)
    prompts = [rng.integers(0, model.config.vocab_size, n).tolist() for n in (23, 5, 9)]
    from paddlellm.modeling.attention import set_default_kernel

    fused_calls = _fused_counter(monkeypatch)
    try:  # --attention_kernel cpu makes it the process's kernel (auto picks it too)
        engine = LLMEngine(model, None, block_size=4, num_blocks=64, attention_kernel="cpu")
        fast = _greedy(engine, prompts)
        assert get_attention_kernel(AttentionSpec(head_dim=model.config.head_dim, cache="paged"),
                                    backend="cpu").name == "cpu"
    finally:
        set_default_kernel("auto")
    assert fused_calls["served"] > 0  # the layers ran fused (float32 or weight-only)
    head = getattr(model, "lm_head", None) or model.model.embed_tokens  # the float product
    assert head._float_kernel_cache[1] is not None and head._float_kernel_cache[1].name == "cpu"

    monkeypatch.setenv("PADDLELLM_CPU_KERNELS", "0")  # the plugin declines everything
    from paddlellm.modeling.attention import clear_kernel_cache

    clear_kernel_cache()
    reference = _greedy(LLMEngine(model, None, block_size=4, num_blocks=64), prompts)
    assert get_attention_kernel(AttentionSpec(head_dim=model.config.head_dim, cache="paged"),
                                backend="cpu").name == "reference"
    assert fast == reference


# --- the fused decoder layer ------------------------------------------------------------------------

def _fused_counter(monkeypatch):
    from paddlellm_kernels_cpu import attention as cpu_attention

    calls = {"asked": 0, "served": 0}
    real = cpu_attention.CpuPagedAttention.decoder_layer

    def counting(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["asked"] += 1
        calls["served"] += out is not None
        return out

    monkeypatch.setattr(cpu_attention.CpuPagedAttention, "decoder_layer", counting)
    return calls


@pytest.mark.parametrize("preset,overrides,quant_type", [
    ("llama-tiny", {}, None),
    ("qwen-tiny", {}, None),  # q/k/v biases
    ("mistral-tiny", {"sliding_window": 6}, None),  # a window shorter than the prompts
    ("qwen-tiny", {}, "weight_only_int8"),  # weight-only projections (biases added after)
    ("llama-tiny", {}, "weight_only_int4"),
])
def test_fused_decoder_layer_equals_the_layer_by_layer_path(manager, ops, monkeypatch, preset,
                                                            overrides, quant_type):
    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine import LLMEngine, SamplingParams
    from paddlellm.plugin.manager import get_registry
    from paddlellm_kernels_cpu import attention as cpu_attention

    paddle.seed(7)
    model = AutoModelForCausalLM.from_config(preset, **overrides)
    if quant_type:
        get_registry().load("quantizer", quant_type).quantize(model, quant_type, None, {})
    rng = np.random.default_rng(8)
    prompts = [rng.integers(0, model.config.vocab_size, n).tolist() for n in (23, 5, 9)]
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True, logprobs=3)
    calls = _fused_counter(monkeypatch)
    fused = LLMEngine(model, None, block_size=4, num_blocks=64).generate(prompts, params)
    layers = model.config.num_layers
    assert calls["served"] == calls["asked"] and calls["served"] >= 9 * layers  # every decode step
    monkeypatch.setattr(cpu_attention.CpuPagedAttention, "decoder_layer",
                        lambda self, *a, **k: None)  # each layer runs its own modules
    plain = LLMEngine(model, None, block_size=4, num_blocks=64).generate(prompts, params)
    assert [o["token_ids"] for o in fused] == [o["token_ids"] for o in plain]
    for a, b in zip(fused, plain):
        got = [e["logprob"] for e in a["logprobs"]]
        want = [e["logprob"] for e in b["logprobs"]]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen-tiny"])
def test_fused_decoder_layer_serves_float32_prefills(manager, ops, monkeypatch, preset):
    """Prefills of more than MAX_LAYER_ROWS rows run fused too when the projections are float32
    and MKL's GEMM is there (weight-only ones of that many rows are declined: the layer's
    dequantize + GEMM is faster); tokens and log-probabilities equal the layer-by-layer path."""
    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine import LLMEngine, SamplingParams
    from paddlellm.plugin.manager import get_registry
    from paddlellm_kernels_cpu import attention as cpu_attention
    from paddlellm_kernels_cpu import build

    if not build.blas():
        pytest.skip("no MKL cblas_sgemm in this Paddle build: prefills run layer by layer")
    paddle.seed(5)
    model = AutoModelForCausalLM.from_config(preset)
    rng = np.random.default_rng(6)
    prompts = [rng.integers(0, model.config.vocab_size, n).tolist() for n in (100, 71)]
    params = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True, logprobs=2)
    rows_served = []
    real = cpu_attention.CpuPagedAttention.decoder_layer

    def recording(self, x, *args, **kwargs):
        out = real(self, x, *args, **kwargs)
        if out is not None:
            rows_served.append(x.shape[0] * x.shape[1])
        return out

    monkeypatch.setattr(cpu_attention.CpuPagedAttention, "decoder_layer", recording)
    engine = lambda: LLMEngine(model, None, block_size=4, num_blocks=128, max_model_len=160)
    fused = engine().generate(prompts, params)
    assert max(rows_served) == 171  # both prompts in one prefill step, fused
    monkeypatch.setattr(cpu_attention.CpuPagedAttention, "decoder_layer", lambda self, *a, **k: None)
    plain = engine().generate(prompts, params)
    assert [o["token_ids"] for o in fused] == [o["token_ids"] for o in plain]
    for a, b in zip(fused, plain):
        np.testing.assert_allclose([e["logprob"] for e in a["logprobs"]],
                                   [e["logprob"] for e in b["logprobs"]], rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(cpu_attention.CpuPagedAttention, "decoder_layer", recording)
    get_registry().load("quantizer", "weight_only_int8").quantize(model, "weight_only_int8", None, {})
    rows_served.clear()
    engine().generate(prompts, params)
    assert rows_served and max(rows_served) <= cpu_attention.CpuPagedAttention.MAX_LAYER_ROWS


def test_fused_decoder_layer_on_every_instruction_set(manager, isa, monkeypatch):
    """Each instruction set's layer (its vectorised SiLU, rotary, products) gives the tokens
    and log-probabilities of the layer-by-layer path."""
    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine import LLMEngine, SamplingParams
    from paddlellm_kernels_cpu import attention as cpu_attention

    paddle.seed(11)
    model = AutoModelForCausalLM.from_config("llama-tiny", intermediate_size=100)  # a tail
    prompts = [[3, 14, 15, 92, 65], list(range(40, 59))]
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, logprobs=2)
    calls = _fused_counter(monkeypatch)
    fused = LLMEngine(model, None, block_size=4, num_blocks=64).generate(prompts, params)
    assert calls["served"] > 0
    monkeypatch.setattr(cpu_attention.CpuPagedAttention, "decoder_layer",
                        lambda self, *a, **k: None)
    plain = LLMEngine(model, None, block_size=4, num_blocks=64).generate(prompts, params)
    assert [o["token_ids"] for o in fused] == [o["token_ids"] for o in plain]
    for a, b in zip(fused, plain):
        np.testing.assert_allclose([e["logprob"] for e in a["logprobs"]],
                                   [e["logprob"] for e in b["logprobs"]], rtol=1e-4, atol=1e-4)


def test_fused_decoder_layer_is_not_asked_where_the_layer_differs(manager, ops, monkeypatch):
    """Other layer shapes (Gemma's offset norm and GELU) and projections that are not the
    models plugin's own or weight-only layers (an adapter wrapper, here a plain Paddle
    Linear) run layer by layer."""
    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine import LLMEngine, SamplingParams

    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    calls = _fused_counter(monkeypatch)
    paddle.seed(9)
    gemma = AutoModelForCausalLM.from_config("gemma-tiny")
    LLMEngine(gemma, None, block_size=4, num_blocks=64).generate([[5, 6, 7]], params)
    assert calls["asked"] == 0
    model = AutoModelForCausalLM.from_config("llama-tiny")
    want = LLMEngine(model, None, block_size=4, num_blocks=64).generate([[5, 6, 7]], params)
    assert calls["served"] > 0
    calls.update(asked=0, served=0)
    for layer in model.model.layers:  # another kind of projection: each layer's own check
        old = layer.mlp.up_proj
        plain = paddle.nn.Linear(old.weight.shape[0], old.weight.shape[1], bias_attr=False)
        plain.weight.set_value(old.weight)
        layer.mlp.up_proj = plain
    got = LLMEngine(model, None, block_size=4, num_blocks=64).generate([[5, 6, 7]], params)
    assert calls["asked"] == 0
    assert got[0]["token_ids"] == want[0]["token_ids"]


def test_fused_plan_follows_swapped_modules_and_reassigned_tensors(manager, ops, monkeypatch):
    """A layer gathers what it passes to the fused kernel once; quantizing the model in place
    (new modules) or assigning a new parameter afterwards is seen on the next step."""
    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine import LLMEngine, SamplingParams
    from paddlellm.plugin.manager import get_registry
    from paddlellm_kernels_cpu import attention as cpu_attention

    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, logprobs=1)
    paddle.seed(13)
    model = AutoModelForCausalLM.from_config("llama-tiny")
    calls = _fused_counter(monkeypatch)
    run = lambda: LLMEngine(model, None, block_size=4, num_blocks=64).generate([[5, 6, 7, 8]], params)
    before = run()
    get_registry().load("quantizer", "weight_only_int4").quantize(model, "weight_only_int4", None, {})
    norm = model.model.layers[0].post_attention_layernorm
    norm.weight = norm.create_parameter(norm.weight.shape, default_initializer=
                                        paddle.nn.initializer.Constant(3.0))
    calls.update(asked=0, served=0)
    fused = run()
    assert calls["served"] == calls["asked"] > 0
    monkeypatch.setattr(cpu_attention.CpuPagedAttention, "decoder_layer", lambda self, *a, **k: None)
    plain = run()
    assert fused[0]["token_ids"] == plain[0]["token_ids"]
    np.testing.assert_allclose([e["logprob"] for e in fused[0]["logprobs"]],
                               [e["logprob"] for e in plain[0]["logprobs"]], rtol=1e-4, atol=1e-4)
    assert [e["logprob"] for e in fused[0]["logprobs"]] != [e["logprob"] for e in before[0]["logprobs"]]


def test_bfloat16_model_is_declined_by_the_fused_layer(manager, ops, monkeypatch):
    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine import LLMEngine, SamplingParams

    from paddlellm.plugin.precision import store_low_compute_fp32

    calls = _fused_counter(monkeypatch)  # bfloat16 weights, float32 math (from_pretrained's way)
    model = store_low_compute_fp32(AutoModelForCausalLM.from_config("llama-tiny"), "bfloat16")
    out = LLMEngine(model, None, block_size=4, num_blocks=64).generate(
        [[5, 6, 7]], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    assert len(out[0]["token_ids"]) == 4 and calls["served"] == 0


# --- a build that cannot happen ---------------------------------------------------------------

def test_missing_compiler_falls_back_and_doctor_says_so(tmp_path):
    code = textwrap.dedent("""
        import importlib, json
        from paddlellm.plugin.manager import PluginManager, reset_plugin_manager
        m = PluginManager()
        if not m.pm.has_plugin("cpu_kernels"):
            m.register(importlib.import_module("paddlellm_kernels_cpu.plugin"), "cpu_kernels",
                       "paddlellm-kernels-cpu", "0.1.0")
        reset_plugin_manager(m)
        from paddlellm.modeling.attention import get_attention_kernel
        from paddlellm.plugin.doctor import diagnose, format_report
        from paddlellm.interfaces import AttentionSpec, LinearSpec
        from paddlellm.modeling.linear import get_linear_kernel
        report = diagnose(m)
        print(json.dumps({
            "attention": get_attention_kernel(AttentionSpec(cache="paged"), backend="cpu").name,
            "linear": get_linear_kernel(LinearSpec(), "cpu"),
            "compiled": report["compiled_kernels"], "missing": report["missing"],
            "text": format_report(report)}))
    """)
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), "PADDLELLM_KERNEL_CACHE": str(tmp_path)}
    env.pop("PADDLELLM_CPU_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["attention"] == "reference" and out["linear"] is None
    rows = {(r["kind"], r["name"]): r for r in out["compiled"]}
    row = rows[("attention_kernel", "cpu")]
    assert row["available"] is False and "no C++ compiler" in row["detail"]
    assert "the reference path runs" in row["detail"]
    assert not any("compiler" in m for m in out["missing"])  # shown, never fatal
    assert "attention kernel 'cpu' (paddlellm-kernels-cpu): unavailable: build failed" in out["text"]
    assert list(tmp_path.glob("cpu-*/failed.txt"))  # recorded: later runs do not retry
