// Internal entry points of the CPU kernels; the public API is cpu/matmul.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "model/dtype_convert.h"
#include "model/tensor.h"

namespace kvc::cpu::detail {

// Rows per register tile of the decode kernel, and the row granularity of the thread split.
inline constexpr int64_t kRowUnit = 8;

// Exact scalar conversions (column tails, the native-bf16 path and tests): one definition for
// the whole core, shared with the weight loader.
using cvt::bf16_to_f32;
using cvt::f16_to_f32;
using cvt::f32_to_bf16;

// ---- Highway kernels (kernels_hwy.cpp), best target picked at run time ----
// y[r] = dot(W row r, x) (+ bias[r]) for r in [r0, r1). W rows are `cols` elements of `dtype`.
void matvec_rows(DType dtype, const void* w, int64_t cols, const float* x, const float* bias,
                 float* y, int64_t r0, int64_t r1);
// y[t * rows + r] = dot(W row r, x[t * cols ..]) (+ bias[r]) for r in [r0, r1), t in [0, n_tokens).
// Bitwise equal to matvec_rows for each token.
void gemm_rows(DType dtype, const void* w, int64_t rows, int64_t cols, const float* x,
               int64_t n_tokens, const float* bias, float* y, int64_t r0, int64_t r1);
float dot_f32(const float* a, const float* b, int64_t n);
void axpy_f32(float alpha, const float* x, float* y, int64_t n);
const char* target_name();
// The attention kernels and GELU are declared in cpu/attention.h (defined in kernels_hwy.cpp).

// ---- Native bf16 dot products (kernels_bf16_native.cpp), AVX512_BF16 only ----
bool native_bf16_supported();
// Same contracts as above with bf16 weights `w` and bf16 activations `xb`.
void matvec_rows_bf16_native(const uint16_t* w, int64_t cols, const uint16_t* xb,
                             const float* bias, float* y, int64_t r0, int64_t r1);
void gemm_rows_bf16_native(const uint16_t* w, int64_t rows, int64_t cols, const uint16_t* xb,
                           int64_t n_tokens, const float* bias, float* y, int64_t r0, int64_t r1);

}  // namespace kvc::cpu::detail
