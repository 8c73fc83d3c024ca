// The kernels for CPUs with AVX-512 (F, BW, VL, DQ), VNNI and FMA; ops.cc calls them only there.
// They are the AVX-512 ones except for the weight-only products' int16 dot (vpdpwssd).
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#define PLK_ISA 3
#define PLK_NS avx512vnni
#include "kernels_impl.inc"
#else  // not x86: the portable kernels under this name (never selected)
#define PLK_ISA 0
#define PLK_NS avx512vnni
#include "kernels_impl.inc"
#endif
