// The kernels for CPUs with AVX2 and FMA; ops.cc calls them only there.
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx2,fma,f16c")
#define PLK_ISA 1
#define PLK_NS avx2
#include "kernels_impl.inc"
#else  // not x86: the portable kernels under this name (never selected)
#define PLK_ISA 0
#define PLK_NS avx2
#include "kernels_impl.inc"
#endif
