// Paddle custom operators of paddlellm-kernels-cpu: shape checks, then one call into the
// kernels of the best instruction set this CPU has (checked here at run time, whatever the
// caller asks for: a request above what the CPU supports runs the best it does support).
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"
#include "paddle/extension.h"

namespace {

int cpu_isa() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return __builtin_cpu_supports("avx512vnni") ? plk::kAvx512Vnni : plk::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return plk::kAvx2;
#endif
  return plk::kScalar;
}

const int kCpuIsa = cpu_isa();

int pick(int64_t requested) {
  return requested < 0 ? kCpuIsa : std::min<int>(static_cast<int>(requested), kCpuIsa);
}

void check_cpu_f32(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), name, " must be a CPU tensor");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, name, " must be float32");
}

// plk::<the instruction set `which`>::fn(args...)
#define PLK_CALL(which, fn, ...)                                     \
  switch (which) {                                                   \
    case plk::kAvx512Vnni: plk::avx512vnni::fn(__VA_ARGS__); break;  \
    case plk::kAvx512: plk::avx512::fn(__VA_ARGS__); break;          \
    case plk::kAvx2: plk::avx2::fn(__VA_ARGS__); break;              \
    default: plk::scalar::fn(__VA_ARGS__);                           \
  }

// k, v (N, Hkv * D) rows written into the pools (slots, Hkv, D) at slot_mapping
void write_kv(paddle::Tensor& key_pool, paddle::Tensor& value_pool,
              const paddle::Tensor& slot_mapping, const float* k, const float* v, int64_t N) {
  PD_CHECK(slot_mapping.dtype() == paddle::DataType::INT64 && slot_mapping.numel() == N,
           "slot_mapping must be int64 (N,)");
  const auto ks = key_pool.shape();
  const int64_t* slots = slot_mapping.data<int64_t>();
  const int64_t row = ks[1] * ks[2];
  float* kp = key_pool.data<float>();
  float* vp = value_pool.data<float>();
  for (int64_t n = 0; n < N; ++n) {
    PD_CHECK(slots[n] >= 0 && slots[n] < ks[0], "slot ", slots[n], " outside the pool of ", ks[0]);
    std::memcpy(kp + slots[n] * row, k + n * row, sizeof(float) * row);
    std::memcpy(vp + slots[n] * row, v + n * row, sizeof(float) * row);
  }
}

void check_tables(const paddle::Tensor& block_tables, const paddle::Tensor& seq_info) {
  PD_CHECK(block_tables.dtype() == paddle::DataType::INT64 && block_tables.shape().size() == 2,
           "block_tables must be int64 (S, max_blocks)");
  PD_CHECK(seq_info.dtype() == paddle::DataType::INT64 && seq_info.shape().size() == 2 &&
               seq_info.shape()[1] == 3 && seq_info.shape()[0] == block_tables.shape()[0],
           "seq_info must be int64 (S, 3): query_start, query_len, context_len");
}

// The paged attention of N new query rows (N, Hq, D) into out, over the pools as they are
// (check_tables first).
void attend(int which, const float* q, const paddle::Tensor& key_pool,
            const paddle::Tensor& value_pool, const paddle::Tensor& block_tables,
            const paddle::Tensor& seq_info, float* out, int64_t N, int64_t Hq, float scale,
            float softcap, int64_t window, int64_t block_size, int threads) {
  plk::PagedAttentionArgs a;
  a.q = q;
  a.key_pool = key_pool.data<float>();
  a.value_pool = value_pool.data<float>();
  a.block_tables = block_tables.data<int64_t>();
  a.table_width = block_tables.shape()[1];
  a.seq_info = seq_info.data<int64_t>();
  a.out = out;
  a.num_seqs = seq_info.shape()[0];
  a.num_tokens = N;
  a.q_heads = Hq;
  a.kv_heads = key_pool.shape()[1];
  a.head_dim = key_pool.shape()[2];
  a.block_size = block_size;
  a.scale = scale;
  a.softcap = softcap;
  a.window = window;
  PLK_CALL(which, paged_attention, a, threads);
}

// y (rows, N) = x (rows, K) @ dequant(qweight).T for int8 (N, K) / int4 (N, ceil(K/2)) weights
// with scales (N, G) (the caller checked the shapes)
void weight_only_mm(int which, const float* x, const paddle::Tensor& qweight,
                    const paddle::Tensor& scales, float* y, int64_t rows, int64_t K, int64_t bits,
                    int64_t group_size, int threads) {
  plk::WeightOnlyArgs a;
  a.x = x;
  a.qweight = qweight.data();
  a.scales = scales.data<float>();
  a.y = y;
  a.rows = rows;
  a.in_features = K;
  a.out_features = qweight.shape()[0];
  a.n_groups = scales.shape().size() == 2 ? scales.shape()[1] : 1;
  a.group_len = a.n_groups == 1 ? K : group_size;
  a.bits = static_cast<int>(bits);
  PLK_CALL(which, weight_only_matmul, a, threads);
}

// y (rows, N) = x (rows, K) @ w [+ bias]: w (K, N), or (N, K) when transposed
// cblas_sgemm of the MKL Paddle ships (libmklml_intel, loaded with Paddle on x86 builds), found
// at run time; nullptr where there is none (the compiled products then serve every row count).
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                         int, float, float*, int);
SgemmFn blas_sgemm() {
  static const SgemmFn fn = [] {
    if (const char* off = std::getenv("PADDLELLM_CPU_KERNELS_BLAS"); off && off[0] == '0')
      return SgemmFn{nullptr};
    void* sym = dlsym(RTLD_DEFAULT, "cblas_sgemm");
    if (!sym) {
      if (void* lib = dlopen("libmklml_intel.so", RTLD_NOW | RTLD_GLOBAL)) sym = dlsym(lib, "cblas_sgemm");
    }
    return reinterpret_cast<SgemmFn>(sym);
  }();
  return fn;
}

// From this many rows a float32 product is a small GEMM, where a blocked BLAS kernel that
// keeps tiles of x and w in registers beats streaming w once per row group (the compiled
// product re-reads each 8-row strip of w from cache for every row).
constexpr int64_t kBlasRows = 6;

void float_mm(int which, const float* x, const paddle::Tensor& w, const float* bias, float* y,
              int64_t rows, bool transposed, int threads) {
  const int64_t K = w.shape()[transposed ? 1 : 0], N = w.shape()[transposed ? 0 : 1];
  if (rows >= kBlasRows && K > 0 && N > 0) {
    if (SgemmFn gemm = blas_sgemm()) {
      for (int64_t r = 0; r < rows; ++r) {
        if (bias)
          std::memcpy(y + r * N, bias, sizeof(float) * N);
      }
      // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
      gemm(101, 111, transposed ? 112 : 111, static_cast<int>(rows), static_cast<int>(N),
           static_cast<int>(K), 1.f, x, static_cast<int>(K), w.data<float>(),
           static_cast<int>(transposed ? K : N), bias ? 1.f : 0.f, y, static_cast<int>(N));
      return;
    }
  }
  plk::FloatMatmulArgs a;
  a.x = x;
  a.w = w.data<float>();
  a.bias = bias;
  a.y = y;
  a.rows = rows;
  a.in_features = K;
  a.out_features = N;
  if (transposed) {
    PLK_CALL(which, float_matmul_nt, a, threads);
  } else {
    PLK_CALL(which, float_matmul, a, threads);
  }
}

}  // namespace

// Writes the new keys/values into the pools (in place, when `write`), then attends.
// q (..., Hq, D) -> out of q's shape; k, v (..., Hkv, D) with N rows.
std::vector<paddle::Tensor> PagedAttention(const paddle::Tensor& q, const paddle::Tensor& k,
                                           const paddle::Tensor& v, paddle::Tensor& key_pool,
                                           paddle::Tensor& value_pool,
                                           const paddle::Tensor& slot_mapping,
                                           const paddle::Tensor& block_tables,
                                           const paddle::Tensor& seq_info, float scale,
                                           float softcap, int64_t window, int64_t block_size,
                                           int64_t threads, int64_t isa, bool write) {
  check_cpu_f32(q, "q");
  check_cpu_f32(key_pool, "key_pool");
  check_cpu_f32(value_pool, "value_pool");
  check_tables(block_tables, seq_info);
  const auto qs = q.shape();
  const auto ks = key_pool.shape();
  PD_CHECK(qs.size() >= 2 && ks.size() == 3 && value_pool.shape() == ks,
           "q must be (..., Hq, D) and the pools (slots, Hkv, D)");
  const int64_t D = qs.back(), Hq = qs[qs.size() - 2], Hkv = ks[1];
  PD_CHECK(ks[2] == D, "head_dim of q (", D, ") and the pools (", ks[2], ") differ");
  PD_CHECK(Hkv > 0 && Hq % Hkv == 0, "query heads (", Hq, ") must be a multiple of kv heads (", Hkv, ")");
  const int64_t num_tokens = q.numel() / (Hq * D);
  if (write) {
    check_cpu_f32(k, "k");
    check_cpu_f32(v, "v");
    PD_CHECK(k.numel() == num_tokens * Hkv * D && v.numel() == k.numel(),
             "k and v must hold (N, Hkv, D) for the N new tokens");
    write_kv(key_pool, value_pool, slot_mapping, k.data<float>(), v.data<float>(), num_tokens);
  }
  auto out = paddle::empty(qs, paddle::DataType::FLOAT32, q.place());
  attend(pick(isa), q.data<float>(), key_pool, value_pool, block_tables, seq_info,
         out.data<float>(), num_tokens, Hq, scale, softcap, window, block_size,
         static_cast<int>(std::max<int64_t>(1, threads)));
  return {out};
}

using Shape = std::vector<int64_t>;
std::vector<Shape> PagedAttentionShape(const Shape& q, const Shape&, const Shape&, const Shape& kp,
                                       const Shape& vp, const Shape&, const Shape&, const Shape&) {
  return {q, kp, vp};
}

using Dtype = paddle::DataType;
std::vector<Dtype> PagedAttentionDtype(const Dtype& q, const Dtype&, const Dtype&, const Dtype& kp,
                                       const Dtype& vp, const Dtype&, const Dtype&, const Dtype&) {
  return {q, kp, vp};
}

PD_BUILD_OP(plk_paged_attention)
    .Inputs({"Q", "K", "V", "KeyPool", "ValuePool", "SlotMapping", "BlockTables", "SeqInfo"})
    .Outputs({"Out", "KeyPoolOut", "ValuePoolOut"})
    .SetInplaceMap({{"KeyPool", "KeyPoolOut"}, {"ValuePool", "ValuePoolOut"}})
    .Attrs({"scale: float", "softcap: float", "window: int64_t", "block_size: int64_t",
            "threads: int64_t", "isa: int64_t", "write: bool"})
    .SetKernelFn(PD_KERNEL(PagedAttention))
    .SetInferShapeFn(PD_INFER_SHAPE(PagedAttentionShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PagedAttentionDtype));

// x (..., K) float32, qweight int8 (N, K) or uint8 (N, ceil(K/2)), scales (N, G) -> (..., N)
std::vector<paddle::Tensor> WeightOnlyMatmul(const paddle::Tensor& x, const paddle::Tensor& qweight,
                                             const paddle::Tensor& scales, int64_t bits,
                                             int64_t group_size, int64_t threads, int64_t isa) {
  check_cpu_f32(x, "x");
  check_cpu_f32(scales, "scales");
  PD_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4");
  PD_CHECK(qweight.is_cpu() && qweight.shape().size() == 2, "qweight must be a 2-D CPU tensor");
  PD_CHECK(qweight.dtype() == (bits == 8 ? paddle::DataType::INT8 : paddle::DataType::UINT8),
           "qweight must be int8 for 8 bits, uint8 (packed nibbles) for 4 bits");
  auto xs = x.shape();
  const int64_t K = xs.back(), N = qweight.shape()[0];
  const int64_t stored = bits == 8 ? K : (K + 1) / 2;
  PD_CHECK(qweight.shape()[1] == stored, "qweight has ", qweight.shape()[1], " columns, expected ",
           stored, " for ", K, " input features");
  const int64_t G = scales.shape().size() == 2 ? scales.shape()[1] : 1;
  PD_CHECK(scales.shape()[0] == N, "scales must be (out_features, n_groups)");
  const int64_t glen = G == 1 ? K : group_size;
  PD_CHECK(glen > 0 && (G - 1) * glen < K && G * glen >= K, "group_size ", group_size,
           " does not give ", G, " groups over ", K, " columns");
  PD_CHECK(bits == 8 || glen % 2 == 0 || G == 1, "int4 needs an even group_size");
  xs.back() = N;
  auto y = paddle::empty(xs, paddle::DataType::FLOAT32, x.place());
  weight_only_mm(pick(isa), x.data<float>(), qweight, scales, y.data<float>(), x.numel() / K, K,
                 bits, group_size, static_cast<int>(std::max<int64_t>(1, threads)));
  return {y};
}

std::vector<std::vector<int64_t>> WeightOnlyMatmulShape(const std::vector<int64_t>& x,
                                                        const std::vector<int64_t>& qweight,
                                                        const std::vector<int64_t>&) {
  auto out = x;
  out.back() = qweight[0];
  return {out};
}

std::vector<paddle::DataType> WeightOnlyMatmulDtype(const paddle::DataType& x, const paddle::DataType&,
                                                    const paddle::DataType&) {
  return {x};
}

PD_BUILD_OP(plk_weight_only_matmul)
    .Inputs({"X", "QWeight", "Scales"})
    .Outputs({"Y"})
    .Attrs({"bits: int64_t", "group_size: int64_t", "threads: int64_t", "isa: int64_t"})
    .SetKernelFn(PD_KERNEL(WeightOnlyMatmul))
    .SetInferShapeFn(PD_INFER_SHAPE(WeightOnlyMatmulShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(WeightOnlyMatmulDtype));

// x (..., K) float32 @ w [+ bias (N)] -> (..., N): nn.Linear's product for a few rows; w is
// (K, N) (nn.Linear's layout) or, `transposed`, (N, K) (an embedding table used as the head).
// An empty bias tensor (numel 0) means none.
std::vector<paddle::Tensor> FloatMatmul(const paddle::Tensor& x, const paddle::Tensor& w,
                                        const paddle::Tensor& bias, bool transposed,
                                        int64_t threads, int64_t isa) {
  check_cpu_f32(x, "x");
  check_cpu_f32(w, "weight");
  PD_CHECK(w.shape().size() == 2, "weight must be 2-D");
  auto xs = x.shape();
  PD_CHECK(!xs.empty(), "x must have a feature dimension");
  const int64_t K = xs.back();
  const int64_t wk = transposed ? w.shape()[1] : w.shape()[0];
  const int64_t N = transposed ? w.shape()[0] : w.shape()[1];
  PD_CHECK(wk == K, "weight has ", wk, " input features, x has ", K);
  const bool has_bias = bias.numel() > 0;
  if (has_bias) {
    check_cpu_f32(bias, "bias");
    PD_CHECK(bias.numel() == N, "bias must hold out_features (", N, ") values");
  }
  xs.back() = N;
  auto y = paddle::empty(xs, paddle::DataType::FLOAT32, x.place());
  float_mm(pick(isa), x.data<float>(), w, has_bias ? bias.data<float>() : nullptr,
           y.data<float>(), K ? x.numel() / K : 0, transposed,
           static_cast<int>(std::max<int64_t>(1, threads)));
  return {y};
}

std::vector<std::vector<int64_t>> FloatMatmulShape(const std::vector<int64_t>& x,
                                                   const std::vector<int64_t>& w,
                                                   const std::vector<int64_t>&, bool transposed) {
  auto out = x;
  out.back() = transposed ? w[0] : w[1];
  return {out};
}

std::vector<paddle::DataType> FloatMatmulDtype(const paddle::DataType& x, const paddle::DataType&,
                                               const paddle::DataType&) {
  return {x};
}

PD_BUILD_OP(plk_float_matmul)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Y"})
    .Attrs({"transposed: bool", "threads: int64_t", "isa: int64_t"})
    .SetKernelFn(PD_KERNEL(FloatMatmul))
    .SetInferShapeFn(PD_INFER_SHAPE(FloatMatmulShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FloatMatmulDtype));

// One pre-norm decoder layer of the Llama shape for a few rows (decode), in one call:
//   h = rms(x) * w_in; q, k, v = h @ Wq (+bq), h @ Wk (+bk), h @ Wv (+bv); rotary on q and k;
//   k, v written to the pools at slot_mapping; a = paged attention; x1 = x + a @ Wo (+bo);
//   y = x1 + (silu(rms(x1) * w_post @ Wg) * (rms(x1) * w_post @ Wu)) @ Wd.
// W: [w_in (H), Wq (H, Hq*D), Wk (H, Hkv*D), Wv, Wo (Hq*D, H), w_post (H), Wg (H, I), Wu, Wd
// (I, H)], nn.Linear's (in, out) layout; B: [bq, bk, bv, bo], each empty (numel 0) for none.
// cos, sin: (N, D) rotary tables of the rows, sin signed as the model keeps it ([-s, s]),
// i.e. rot(x)[d] = x[d] * cos[d] + x[(d + D/2) % D] * sin[d]. Each product, the attention
// and the elementwise steps are the same operations the layer's Paddle path runs, in one
// operator call instead of ~40.
namespace {

const float* bias_or_null(const paddle::Tensor& b) {
  return b.numel() > 0 ? b.data<float>() : nullptr;
}

// Row loops below spread over the threads from this many rows on (prefills through the fused
// layer); decode's few rows stay on the calling thread.
constexpr int64_t kParallelRows = 64;

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t H, float eps,
              int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (rows >= kParallelRows)
  for (int64_t n = 0; n < rows; ++n) {
    const float* xr = x + n * H;
    float ss = 0.f;
    for (int64_t i = 0; i < H; ++i) ss += xr[i] * xr[i];
    const float r = 1.f / std::sqrt(ss / static_cast<float>(H) + eps);
    float* yr = y + n * H;
    for (int64_t i = 0; i < H; ++i) yr[i] = w[i] * (xr[i] * r);
  }
}

void rotary(float* x, const float* cos, const float* sin, int64_t rows, int64_t heads, int64_t D,
            int threads) {
  const int64_t half = D / 2;
#pragma omp parallel num_threads(threads) if (rows >= kParallelRows)
  {
    std::vector<float> tmp(D);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < rows; ++n) {
      const float* c = cos + n * D;
      const float* s = sin + n * D;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (n * heads + h) * D;
        std::memcpy(tmp.data(), v, sizeof(float) * D);
        for (int64_t d = 0; d < half; ++d) v[d] = tmp[d] * c[d] + tmp[d + half] * s[d];
        for (int64_t d = half; d < D; ++d) v[d] = tmp[d] * c[d] + tmp[d - half] * s[d];
      }
    }
  }
}

void add_into(float* y, const float* x, int64_t n, int64_t rows, int threads) {  // y += x
#pragma omp parallel for num_threads(threads) schedule(static) if (rows >= kParallelRows)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// One projection of the fused layer: float32 (in, out), or weight-only int8/int4 (out, .) with
// scales (out, G) (then the bias is added here).
void project(int isa, const float* x, const paddle::Tensor& w, const paddle::Tensor& scales,
             const paddle::Tensor& bias, float* y, int64_t rows, int64_t in, int64_t bits,
             int64_t group_size, int threads) {
  if (scales.numel() == 0) {
    float_mm(isa, x, w, bias_or_null(bias), y, rows, false, threads);
    return;
  }
  weight_only_mm(isa, x, w, scales, y, rows, in, bits, group_size, threads);
  const int64_t n_out = w.shape()[0];
  if (bias.numel() > 0) {
    const float* b = bias.data<float>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n_out; ++c) y[r * n_out + c] += b[c];
  }
}

}  // namespace

std::vector<paddle::Tensor> DecoderLayer(
    const paddle::Tensor& x, const std::vector<paddle::Tensor>& W,
    const std::vector<paddle::Tensor>& B, const std::vector<paddle::Tensor>& S,
    const paddle::Tensor& cos, const paddle::Tensor& sin, paddle::Tensor& key_pool,
    paddle::Tensor& value_pool, const paddle::Tensor& slot_mapping,
    const paddle::Tensor& block_tables, const paddle::Tensor& seq_info, float eps, float scale,
    float softcap, int64_t window, int64_t block_size, int64_t q_heads, int64_t bits,
    int64_t group_size, int64_t threads, int64_t isa) {
  check_cpu_f32(x, "x");
  PD_CHECK(W.size() == 9 && B.size() == 4 && S.size() == 7,
           "W must hold 9 weights, B 4 biases and S 7 scales");
  for (const auto& b : B)
    if (b.numel() > 0) check_cpu_f32(b, "bias");
  check_cpu_f32(W[0], "input norm weight");
  check_cpu_f32(W[5], "post-attention norm weight");
  check_cpu_f32(cos, "cos");
  check_cpu_f32(sin, "sin");
  check_cpu_f32(key_pool, "key_pool");
  check_cpu_f32(value_pool, "value_pool");
  const auto ks = key_pool.shape();
  PD_CHECK(ks.size() == 3 && value_pool.shape() == ks, "the pools must be (slots, Hkv, D)");
  const int64_t H = x.shape().back(), N = x.numel() / H, Hkv = ks[1], D = ks[2];
  const int64_t Hq = q_heads;
  PD_CHECK(W[0].numel() == H && W[5].numel() == H, "norm weights must hold H values");
  PD_CHECK(D % 2 == 0 && Hkv > 0 && Hq % Hkv == 0, "head_dim must be even, Hq a multiple of Hkv");
  // projection j (0..6: q, k, v, o, gate, up, down) is W[kProj[j]]; its (in, out) features
  const int kProj[7] = {1, 2, 3, 4, 6, 7, 8};
  int64_t in_f[7], out_f[7];
  for (int j = 0; j < 7; ++j) {
    const auto& w = W[kProj[j]];
    PD_CHECK(w.is_cpu() && w.shape().size() == 2, "projection weights must be 2-D CPU tensors");
    if (S[j].numel() == 0) {
      check_cpu_f32(w, "weight");
      in_f[j] = w.shape()[0];
      out_f[j] = w.shape()[1];
    } else {
      check_cpu_f32(S[j], "scales");
      PD_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4 for weight-only projections");
      PD_CHECK(w.dtype() == (bits == 8 ? paddle::DataType::INT8 : paddle::DataType::UINT8),
               "qweight must be int8 for 8 bits, uint8 (packed nibbles) for 4 bits");
      out_f[j] = w.shape()[0];
      PD_CHECK(S[j].shape()[0] == out_f[j], "scales must be (out_features, n_groups)");
      in_f[j] = -1;  // from the chain below
    }
  }
  const int64_t I = out_f[4];
  const int64_t want_in[7] = {H, H, H, Hq * D, H, H, I};
  const int64_t want_out[7] = {Hq * D, Hkv * D, Hkv * D, H, I, I, H};
  for (int j = 0; j < 7; ++j) {
    if (in_f[j] < 0) {
      in_f[j] = want_in[j];
      const int64_t stored = bits == 8 ? in_f[j] : (in_f[j] + 1) / 2;
      PD_CHECK(W[kProj[j]].shape()[1] == stored, "qweight of projection ", j, " has ",
               W[kProj[j]].shape()[1], " columns, expected ", stored);
      const int64_t G = S[j].shape().size() == 2 ? S[j].shape()[1] : 1;
      const int64_t glen = G == 1 ? in_f[j] : group_size;
      PD_CHECK(glen > 0 && (G - 1) * glen < in_f[j] && G * glen >= in_f[j], "group_size ",
               group_size, " does not give ", G, " groups over ", in_f[j], " columns");
      PD_CHECK(bits == 8 || glen % 2 == 0 || G == 1, "int4 needs an even group_size");
    }
    PD_CHECK(in_f[j] == want_in[j] && out_f[j] == want_out[j], "projection ", j, " is (",
             in_f[j], ", ", out_f[j], "), expected (", want_in[j], ", ", want_out[j], ")");
  }
  PD_CHECK(cos.numel() == N * D && sin.numel() == N * D, "cos/sin must be (N, D)");
  check_tables(block_tables, seq_info);
  const int which = pick(isa);
  const int t = static_cast<int>(std::max<int64_t>(1, threads));
  std::vector<float> h(N * H), q(N * Hq * D), k(N * Hkv * D), v(N * Hkv * D), att(N * Hq * D);
  std::vector<float> g(N * I), u(N * I), d(N * H);
  auto out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  float* y = out.data<float>();
  const float* xin = x.data<float>();
  const paddle::Tensor none = paddle::empty({0}, paddle::DataType::FLOAT32, x.place());
  // attention half
  rms_norm(xin, W[0].data<float>(), h.data(), N, H, eps, t);
  project(which, h.data(), W[1], S[0], B[0], q.data(), N, H, bits, group_size, t);
  project(which, h.data(), W[2], S[1], B[1], k.data(), N, H, bits, group_size, t);
  project(which, h.data(), W[3], S[2], B[2], v.data(), N, H, bits, group_size, t);
  rotary(q.data(), cos.data<float>(), sin.data<float>(), N, Hq, D, t);
  rotary(k.data(), cos.data<float>(), sin.data<float>(), N, Hkv, D, t);
  write_kv(key_pool, value_pool, slot_mapping, k.data(), v.data(), N);
  attend(which, q.data(), key_pool, value_pool, block_tables, seq_info, att.data(), N, Hq, scale,
         softcap, window, block_size, t);
  project(which, att.data(), W[4], S[3], B[3], y, N, Hq * D, bits, group_size, t);  // attn @ Wo
  add_into(y, xin, N * H, N, t);  // x1
  // MLP half
  rms_norm(y, W[5].data<float>(), h.data(), N, H, eps, t);
  project(which, h.data(), W[6], S[4], none, g.data(), N, H, bits, group_size, t);
  project(which, h.data(), W[7], S[5], none, u.data(), N, H, bits, group_size, t);
  // g = silu(g) * u
#pragma omp parallel for num_threads(t) schedule(static) if (N >= kParallelRows)
  for (int64_t r = 0; r < N; ++r) PLK_CALL(which, silu_mul, g.data() + r * I, u.data() + r * I, I);
  project(which, g.data(), W[8], S[6], none, d.data(), N, I, bits, group_size, t);
  add_into(y, d.data(), N * H, N, t);
  return {out};
}

std::vector<Shape> DecoderLayerShape(const Shape& x, const std::vector<Shape>&,
                                     const std::vector<Shape>&, const std::vector<Shape>&,
                                     const Shape&, const Shape&,
                                     const Shape& kp, const Shape& vp, const Shape&, const Shape&,
                                     const Shape&) {
  return {x, kp, vp};
}

std::vector<Dtype> DecoderLayerDtype(const Dtype& x, const std::vector<Dtype>&,
                                     const std::vector<Dtype>&, const std::vector<Dtype>&,
                                     const Dtype&, const Dtype&,
                                     const Dtype& kp, const Dtype& vp, const Dtype&, const Dtype&,
                                     const Dtype&) {
  return {x, kp, vp};
}

PD_BUILD_OP(plk_decoder_layer)
    .Inputs({"X", paddle::Vec("W"), paddle::Vec("B"), paddle::Vec("S"), "Cos", "Sin", "KeyPool",
             "ValuePool",
             "SlotMapping", "BlockTables", "SeqInfo"})
    .Outputs({"Out", "KeyPoolOut", "ValuePoolOut"})
    .SetInplaceMap({{"KeyPool", "KeyPoolOut"}, {"ValuePool", "ValuePoolOut"}})
    .Attrs({"eps: float", "scale: float", "softcap: float", "window: int64_t",
            "block_size: int64_t", "q_heads: int64_t", "bits: int64_t", "group_size: int64_t",
            "threads: int64_t", "isa: int64_t"})
    .SetKernelFn(PD_KERNEL(DecoderLayer))
    .SetInferShapeFn(PD_INFER_SHAPE(DecoderLayerShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DecoderLayerDtype));

// [1 if float32 products of several rows use the process's cblas_sgemm else 0] (for `llm
// doctor`); x is not read.
std::vector<paddle::Tensor> RuntimeInfo(const paddle::Tensor& x) {
  auto out = paddle::empty({1}, paddle::DataType::INT64, paddle::CPUPlace());
  out.data<int64_t>()[0] = blas_sgemm() != nullptr;
  return {out};
}

std::vector<std::vector<int64_t>> RuntimeInfoShape(const std::vector<int64_t>&) { return {{1}}; }

std::vector<paddle::DataType> RuntimeInfoDtype(const paddle::DataType&) {
  return {paddle::DataType::INT64};
}

PD_BUILD_OP(plk_runtime_info)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(RuntimeInfo))
    .SetInferShapeFn(PD_INFER_SHAPE(RuntimeInfoShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(RuntimeInfoDtype));
