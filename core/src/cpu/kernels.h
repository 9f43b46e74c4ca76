// Internal entry points of the CPU kernels; the public API is cpu/matmul.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "model/tensor.h"

namespace kvc::cpu::detail {

// Rows per register tile of the decode kernel, and the row granularity of the thread split.
inline constexpr int64_t kRowUnit = 8;

// Exact scalar widenings (used for the column tails and by tests).
inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);  // normal: rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal half: normalise the mantissa into a normal float.
    int e = -1;
    do {
      man <<= 1;
      ++e;
    } while ((man & 0x400u) == 0);
    bits = sign | static_cast<uint32_t>(112 - e) << 23 | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// fp32 -> bf16 with round-to-nearest-even; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

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

// ---- Native bf16 dot products (kernels_bf16_native.cpp), AVX512_BF16 only ----
bool native_bf16_supported();
// Same contracts as above with bf16 weights `w` and bf16 activations `xb`.
void matvec_rows_bf16_native(const uint16_t* w, int64_t cols, const uint16_t* xb,
                             const float* bias, float* y, int64_t r0, int64_t r1);
void gemm_rows_bf16_native(const uint16_t* w, int64_t rows, int64_t cols, const uint16_t* xb,
                           int64_t n_tokens, const float* bias, float* y, int64_t r0, int64_t r1);

}  // namespace kvc::cpu::detail
