// Plain C++ interface of the compiled CPU kernels (no Paddle types): the same source,
// kernels_impl.inc, is compiled once per instruction set (impl_avx512vnni.cc, impl_avx512.cc,
// impl_avx2.cc, impl_scalar.cc) and ops.cc picks one at run time from the CPU's features.
#pragma once
#include <cstdint>

namespace plk {

// Instruction sets, best last; ops.cc never runs one the CPU lacks.
enum Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Vnni = 3 };

// Paged attention over a block table, read in place (no gather of the cache).
struct PagedAttentionArgs {
  const float* q;           // (N, Hq, D) new queries of all sequences, one flattened row
  const float* key_pool;    // (slots, Hkv, D)
  const float* value_pool;  // (slots, Hkv, D)
  const int64_t* block_tables;  // (S, table_width)
  int64_t table_width;
  const int64_t* seq_info;  // (S, 3): query_start, query_len, context_len
  float* out;               // (N, Hq, D)
  int64_t num_seqs, num_tokens, q_heads, kv_heads, head_dim, block_size;
  float scale;
  float softcap;   // 0: none
  int64_t window;  // 0: none; else key j visible to query at p iff p - j < window
};

// y (M, N) = x (M, K) @ dequant(qweight).T; int8 (N, K) or int4 packed (N, ceil(K/2)),
// scales (N, n_groups) float32, group_len columns per group (K for per-channel).
struct WeightOnlyArgs {
  const float* x;
  const void* qweight;
  const float* scales;
  float* y;
  int64_t rows, in_features, out_features, n_groups, group_len;
  int bits;
};

// y (M, N) = x (M, K) @ w (K, N) [+ bias (N)]: float32, w in nn.Linear's (in, out) layout
// (float_matmul) or (out, in) = (N, K) (float_matmul_nt).
struct FloatMatmulArgs {
  const float* x;
  const float* w;
  const float* bias;  // nullptr: none
  float* y;
  int64_t rows, in_features, out_features;
};

#define PLK_DECLARE(ns)                                                   \
  namespace ns {                                                          \
  void paged_attention(const PagedAttentionArgs& a, int threads);         \
  void weight_only_matmul(const WeightOnlyArgs& a, int threads);          \
  void float_matmul(const FloatMatmulArgs& a, int threads);               \
  void float_matmul_nt(const FloatMatmulArgs& a, int threads);            \
  void silu_mul(float* g, const float* u, int64_t n);                     \
  }
PLK_DECLARE(avx512vnni)
PLK_DECLARE(avx512)
PLK_DECLARE(avx2)
PLK_DECLARE(scalar)
#undef PLK_DECLARE

}  // namespace plk
