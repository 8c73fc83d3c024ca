// The portable kernels: plain C++ (the compiler vectorizes what it can for the base ISA).
#define PLK_ISA 0
#define PLK_NS scalar
#include "kernels_impl.inc"
