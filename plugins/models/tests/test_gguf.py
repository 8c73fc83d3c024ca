"""GGUF in and out: round trips ours -> GGUF -> ours (weights, tokenizer, chat template),
quantized and k-quant tensors written by the ``gguf`` package's own writer, the Q/K rotary
permutation, errors naming file and field; dev-only: llama.cpp (llama-cpp-python) loads our
GGUF with the same greedy tokens, and its logits on a GGUF built without our writer equal ours."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from typer.testing import CliRunner

from models_testutil import FIXTURES
from paddlellm import AutoModelForCausalLM
from paddlellm.checkpoint import CheckpointReader
from paddlellm.tokenizer import AutoTokenizer
from paddlellm_models.gguf_io import GGUFError, gguf_to_hf, hf_to_gguf, permute_qk, unpermute_qk

gguf = pytest.importorskip("gguf", reason="the 'gguf' package (a dependency of paddlellm-models) is not installed")

REPO = Path(__file__).resolve().parents[3]
TOKENIZERS = REPO / "tests" / "fixtures" / "tokenizer"
TEXTS = ["Hello world, 12345 tokens!", " leading space\nnew line", "<s>special</s> x", "ünïcödé 你好 \t tabs",
         "<|im_start|>user\nhi<|im_end|>"]


DEMO = REPO / "core" / "paddlellm" / "assets" / "qwen-demo"


def _checkpoint(tmp_path: Path, family: str, tokenizer: str, **overrides) -> Path:
    """A random tiny checkpoint of preset ``{family}-tiny`` with the fixture tokenizer
    ``tokenizer`` (one embedding row per token, as llama.cpp needs)."""
    out = tmp_path / family
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / tokenizer)
    preset = {"qwen2": "qwen-tiny"}.get(family, f"{family}-tiny")
    paddle.seed(0)
    model = AutoModelForCausalLM.from_config(preset, vocab_size=len(tok), initializer_range=0.2, **overrides)
    model.save_pretrained(out)
    for f in (TOKENIZERS / tokenizer).iterdir():
        if f.is_file() and f.name != "expected.json":
            shutil.copy(f, out / f.name)
    return out


def _weights(path: Path) -> dict[str, np.ndarray]:
    with CheckpointReader(path) as reader:
        return {k: np.array(reader.get_numpy(k, "float32")) for k in reader.keys()}


@pytest.mark.parametrize("family,tokenizer,kind", [("llama", "llama2", "llama"), ("qwen2", "qwen2", "gpt2"),
                                                   ("mistral", "llama2", "llama"), ("qwen3", "qwen2", "gpt2")])
def test_round_trip_f32_is_exact(tmp_path, family, tokenizer, kind):
    src = _checkpoint(tmp_path, family, tokenizer)
    if family == "mistral":  # the tiny preset's window (64) is shorter than its context
        with pytest.warns(UserWarning, match="sliding_window 64 is dropped: llama.cpp's 'llama' architecture"):
            info = hf_to_gguf(src, tmp_path / "m.gguf", outtype="f32")
    else:
        info = hf_to_gguf(src, tmp_path / "m.gguf", outtype="f32")
    assert set(info["tensor_types"]) == {"F32"}
    back = gguf_to_hf(tmp_path / "m.gguf", tmp_path / "back")
    assert back["tokenizer"] == kind and back["chat_template"]
    a, b = _weights(src), _weights(tmp_path / "back")
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    cfg_a, cfg_b = (json.loads((p / "config.json").read_text()) for p in (src, tmp_path / "back"))
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "rms_norm_eps", "tie_word_embeddings"):
        assert cfg_a.get(key, False) == cfg_b.get(key, False), key
    t1, t2 = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(tmp_path / "back")
    assert t1.get_vocab() == t2.get_vocab()
    assert t1.get_chat_template() == t2.get_chat_template()
    assert (t1.bos_token, t1.eos_token) == (t2.bos_token, t2.eos_token)
    for text in TEXTS:
        assert t1.encode(text) == t2.encode(text), text
        assert t1.decode(t1.encode(text)) == t2.decode(t2.encode(text)), text
    model_a = AutoModelForCausalLM.from_pretrained(src)
    model_b = AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    ids = paddle.to_tensor([[1, 5, 9, 22, 3, 17]])
    assert np.array_equal(model_a(ids).numpy(), model_b(ids).numpy())


def test_quantized_outputs_and_types(tmp_path):
    src = _checkpoint(tmp_path, "llama", "llama2")
    ref = _weights(src)
    for outtype, main, tol in (("f16", "F16", 1e-3), ("q8_0", "Q8_0", 1 / 127), ("q4_0", "Q4_0", 1 / 7)):
        hf_to_gguf(src, tmp_path / f"{outtype}.gguf", outtype=outtype)
        reader = gguf.GGUFReader(str(tmp_path / f"{outtype}.gguf"))
        kinds = {t.name: gguf.GGMLQuantizationType(t.tensor_type).name for t in reader.tensors}
        assert kinds["blk.0.attn_q.weight"] == main and kinds["blk.0.attn_norm.weight"] == "F32"
        assert reader.fields["general.file_type"].contents() == {"f16": 1, "q8_0": 7, "q4_0": 2}[outtype]
        gguf_to_hf(tmp_path / f"{outtype}.gguf", tmp_path / outtype)
        back = _weights(tmp_path / outtype)
        for name, want in ref.items():
            # per 32-value block, the error is at most half a quantization step of the block's max
            assert np.abs(back[name] - want).max() <= tol * np.abs(want).max() + 1e-6, (outtype, name)
        del reader


def test_permutation_matches_llama_cpp_rope():
    """q . k under HF's rotate-half RoPE equals q . k under llama.cpp's interleaved RoPE on the
    permuted rows (the permutation moves pair (j, j + d/2) to (2j, 2j + 1) within every head)."""
    rng = np.random.default_rng(0)
    heads, dim, pos_q, pos_k = 3, 8, 5, 2
    wq, wk, x = rng.normal(size=(heads * dim, 16)), rng.normal(size=(heads * dim, 16)), rng.normal(size=16)
    inv = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)

    def rotate_half(v, pos):
        v = v.reshape(heads, dim)
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        a, b = v[:, : dim // 2], v[:, dim // 2:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=1)

    def interleaved(v, pos):
        v = v.reshape(heads, dim // 2, 2)
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        return np.stack([v[..., 0] * c - v[..., 1] * s, v[..., 0] * s + v[..., 1] * c], axis=-1).reshape(heads, dim)

    hf = (rotate_half(wq @ x, pos_q) * rotate_half(wk @ x, pos_k)).sum(-1)
    gg = (interleaved(permute_qk(wq, heads) @ x, pos_q) * interleaved(permute_qk(wk, heads) @ x, pos_k)).sum(-1)
    np.testing.assert_allclose(hf, gg, rtol=1e-10)
    assert np.array_equal(unpermute_qk(permute_qk(wq, heads), heads), wq)
    assert not np.array_equal(permute_qk(wq, heads), wq)


def _write_gguf_with_package(path: Path, weights: dict[str, np.ndarray], kinds: dict[str, object],
                             heads: int = 4, kv_heads: int = 2) -> None:
    """A llama GGUF written by the gguf package's own writer (no code of ours), weights as given in
    llama.cpp's layout, with a byte-level vocabulary."""
    w = gguf.GGUFWriter(str(path), "llama")
    hidden = weights["token_embd.weight"].shape[1]
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(weights["blk.0.ffn_up.weight"].shape[0])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    vocab = weights["token_embd.weight"].shape[0]
    alphabet = [chr(c) for c in range(33, 33 + vocab - 3)]
    w.add_token_list(alphabet + [alphabet[0] + alphabet[1], "<|endoftext|>", "<|im_end|>"])
    w.add_token_types([1] * (vocab - 2) + [3, 3])
    w.add_token_merges([f"{alphabet[0]} {alphabet[1]}"])
    w.add_eos_token_id(vocab - 1)
    w.add_chat_template("{{ messages[0]['content'] }}")
    for name, arr in weights.items():
        kind = kinds.get(name)
        if kind is None:
            w.add_tensor(name, arr.astype(np.float32))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr.astype(np.float32), kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _random_llama_gguf_weights(rng, hidden=64, ffn=128, vocab=96, heads=4, kv_heads=2) -> dict[str, np.ndarray]:
    dim = hidden // heads
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,), "output.weight": (vocab, hidden),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              "blk.0.attn_q.weight": (hidden, hidden), "blk.0.attn_k.weight": (kv_heads * dim, hidden),
              "blk.0.attn_v.weight": (kv_heads * dim, hidden), "blk.0.attn_output.weight": (hidden, hidden),
              "blk.0.ffn_gate.weight": (ffn, hidden), "blk.0.ffn_up.weight": (ffn, hidden),
              "blk.0.ffn_down.weight": (hidden, ffn)}
    out = {k: rng.normal(0, 0.2, size=s).astype(np.float32) for k, s in shapes.items()}
    for k in out:
        if k.endswith("norm.weight"):
            out[k] = 1.0 + 0.1 * out[k]
    return out


def test_reads_quantized_and_k_quant_tensors_from_the_gguf_writer(tmp_path):
    T = gguf.GGMLQuantizationType
    rng = np.random.default_rng(1)
    weights = _random_llama_gguf_weights(rng, hidden=256, ffn=256)
    kinds = {"blk.0.attn_q.weight": T.Q8_0, "blk.0.attn_k.weight": T.Q4_0, "blk.0.attn_v.weight": T.Q4_1,
             "blk.0.ffn_gate.weight": T.Q5_0, "blk.0.ffn_up.weight": T.BF16, "blk.0.attn_output.weight": None}
    _write_gguf_with_package(tmp_path / "q.gguf", weights, kinds)
    # k-quants: the gguf package has no quantizer for them, so the blocks are built from the
    # format (Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles; Q6_K:
    # 128 + 64 bytes of 6-bit quants, 16 int8 scales, f16 d) with random content and sane scales.
    w = gguf.GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    src = gguf.GGUFReader(str(tmp_path / "q.gguf"))
    for key, field in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        w.add_key_value(key, value, field.types[0], sub_type=field.types[-1] if len(field.types) > 1 else None)
    expected = {}
    for t in src.tensors:
        kind = T(t.tensor_type)
        data = np.array(t.data)
        if t.name in ("blk.0.ffn_down.weight", "blk.0.ffn_gate.weight"):
            kind = T.Q4_K if t.name == "blk.0.ffn_down.weight" else T.Q6_K
            rows, cols = weights[t.name].shape
            block, size = gguf.GGML_QUANT_SIZES[kind]
            blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
            scale = np.array([0.01], dtype=np.float16).view(np.uint8)
            if kind == T.Q4_K:
                blocks[:, 0:2] = scale
                blocks[:, 2:4] = scale
            else:
                blocks[:, -2:] = scale
            data = blocks.reshape(rows, -1)
        w.add_tensor(t.name, data, raw_dtype=None if kind in (T.F32, T.F16) else kind)
        expected[t.name] = (gguf.quants.dequantize(data, kind) if kind not in (T.F32, T.F16)
                            else data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    del src
    info = gguf_to_hf(tmp_path / "k.gguf", tmp_path / "hf")
    assert {"Q8_0", "Q4_0", "Q4_1", "BF16", "Q4_K", "Q6_K", "F32"} <= set(info["tensor_types"])
    got = _weights(tmp_path / "hf")
    names = {"blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
             "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
             "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
             "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
             "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
             "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight"}
    for gname, hname in names.items():
        want = expected[gname]
        if gname == "blk.0.attn_q.weight":
            want = unpermute_qk(want, 4)
        elif gname == "blk.0.attn_k.weight":
            want = unpermute_qk(want, 2)
        np.testing.assert_array_equal(got[hname], want.astype(np.float32), err_msg=gname)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok.eos_token == "<|im_end|>" and tok.get_chat_template() == "{{ messages[0]['content'] }}"


def test_errors_name_file_and_field(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "gpt.gguf"), "gptneox")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match=r"gpt\.gguf: general\.architecture 'gptneox' is not supported"):
        gguf_to_hf(tmp_path / "gpt.gguf", tmp_path / "out")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00")
    with pytest.raises(GGUFError, match="bad.gguf: not a readable GGUF file"):
        gguf_to_hf(tmp_path / "bad.gguf", tmp_path / "out2")
    src = tmp_path / "gpt2"
    shutil.copytree(FIXTURES / "gpt2", src)
    with pytest.raises(GGUFError, match=r"config\.json: model_type 'gpt2' cannot be written as GGUF"):
        hf_to_gguf(src, tmp_path / "g.gguf")
    llama = _checkpoint(tmp_path, "llama", "llama2")
    with pytest.raises(GGUFError, match="output type 'q3_k' is not supported"):
        hf_to_gguf(llama, tmp_path / "g.gguf", outtype="q3_k")
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers

    from paddlellm.tokenizer import Tokenizer

    bare = Backend(models.BPE(vocab={t: i for i, t in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))},
                              merges=[]))
    bare.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    Tokenizer(bare, {}).save_pretrained(llama)
    with pytest.raises(GGUFError, match="tokenizer.json: a byte-level BPE without merges cannot be written"):
        hf_to_gguf(llama, tmp_path / "g.gguf")
    small = tmp_path / "small"
    shutil.copytree(FIXTURES / "llama", small)  # 64 embedding rows, a tokenizer of 761 tokens
    shutil.copy(TOKENIZERS / "llama2" / "tokenizer.json", small)
    with pytest.raises(GGUFError, match=r"tokenizer.json: the tokenizer has \d+ tokens but the model's "
                                        r"embedding only 64 rows"):
        hf_to_gguf(small, tmp_path / "g.gguf")


def test_llm_convert_both_ways(tmp_path):
    from paddlellm.cli import build_app

    src = _checkpoint(tmp_path, "llama", "llama2")
    app = build_app()
    out = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "m.gguf"), "--outtype", "q8_0"])
    assert out.exit_code == 0, out.output
    assert "wrote llama GGUF q8_0" in out.output and "parity check passed" in out.output
    back = CliRunner().invoke(app, ["convert", str(tmp_path / "m.gguf"), str(tmp_path / "hf")])
    assert back.exit_code == 0, back.output
    assert "read llama GGUF (F16: 2, F32: 5, Q8_0: 14) -> float32 safetensors; tokenizer: llama" in back.output
    AutoModelForCausalLM.from_pretrained(tmp_path / "hf")


# --- dev-only: llama.cpp itself ---------------------------------------------------------------

def _llama_cpp_python() -> str:
    python = os.environ.get("PADDLELLM_BENCH_PYTHON", str(REPO / ".venv-bench" / "bin" / "python"))
    if not Path(python).is_file():
        pytest.skip(f"llama-cpp-python environment not found at {python} (create it with scripts/bench_env.sh "
                    "or set PADDLELLM_BENCH_PYTHON)")
    probe = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import llama_cpp (scripts/bench_env.sh builds it): {probe.stderr[-200:]}")
    return python


LLAMA_CPP_SCRIPT = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
path, prompt, n, mode = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(model_path=path, n_ctx=64, n_threads=1, logits_all=True, verbose=False, type_k=0, type_v=0)  # f32 KV cache
if mode == "greedy":
    out = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        out.append(int(tok))
        if len(out) == n:
            break
    print(json.dumps({"tokens": out, "encoded": llm.tokenize(b"Hello world, 12345!", add_bos=False, special=False)}))
else:
    llm.eval(prompt)
    print(json.dumps({"logits": np.asarray(llm.scores[: len(prompt)], dtype=np.float64).tolist()}))
"""


def _run_llama_cpp(python: str, path: Path, prompt: list[int], n: int, mode: str) -> dict:
    proc = subprocess.run([python, "-c", LLAMA_CPP_SCRIPT, str(path), json.dumps(prompt), str(n), mode],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llama_cpp_loads_our_gguf_with_equal_greedy_tokens(tmp_path, outtype):
    python = _llama_cpp_python()
    src = DEMO  # trained: greedy choices are not near-ties
    hf_to_gguf(src, tmp_path / "m.gguf", outtype=outtype)
    ours_dir = src
    if outtype != "f32":  # llama.cpp runs the quantized weights: compare with their dequantized values
        gguf_to_hf(tmp_path / "m.gguf", tmp_path / "deq")
        ours_dir = tmp_path / "deq"
    model = AutoModelForCausalLM.from_pretrained(ours_dir)
    tok = AutoTokenizer.from_pretrained(src)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Reverse: a b c"}], add_generation_prompt=True)
    ours = model.generate(paddle.to_tensor([prompt]), max_new_tokens=12, do_sample=False).numpy()[0, len(prompt):]
    theirs = _run_llama_cpp(python, tmp_path / "m.gguf", prompt, 12, "greedy")

    def until_eos(ids):
        ids = [int(i) for i in ids]
        return ids[: ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids

    assert len(until_eos(ours)) >= 3
    assert until_eos(theirs["tokens"]) == until_eos(ours)
    assert theirs["encoded"] == AutoTokenizer.from_pretrained(src).encode("Hello world, 12345!",
                                                                          add_special_tokens=False)


def test_gguf_from_the_package_writer_gives_llama_cpp_logits(tmp_path):
    python = _llama_cpp_python()
    weights = _random_llama_gguf_weights(np.random.default_rng(2))
    _write_gguf_with_package(tmp_path / "ind.gguf", weights, {})
    gguf_to_hf(tmp_path / "ind.gguf", tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    prompt = [4, 8, 15, 16, 23, 42, 7]
    ours = model(paddle.to_tensor([prompt])).numpy()[0]
    theirs = np.asarray(_run_llama_cpp(python, tmp_path / "ind.gguf", prompt, 0, "logits")["logits"])
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
