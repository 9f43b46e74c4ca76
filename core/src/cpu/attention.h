// The per-head attention kernels and the GELU activation of the CPU forward pass, vectorized
// with Highway (the best target is picked at run time; tests pin each target).
#pragma once

#include <cstdint>

namespace kvc::cpu {

// ---- Attention of one (already rotated) query over one head's cache ----
// Keys and values are rows of head_dim floats at slot * head_dim; entry r of the cache uses
// slot slots[r]. Keys are stored without the rotary embedding.

// scores[r] = scale * <q, rotate_half-rope(key r)> for r in [0, count), rotating the first
// 2 * half channels of key r with row positions[r] (row r when positions is null) of the
// cos/sin tables ([position][half] floats). Vectorized over channels. `values` (may be null)
// are only prefetched: the same entries' value rows, read next by attention_values.
void attention_scores(const float* q, const float* keys, const float* values,
                      const int32_t* slots, const int64_t* positions, const float* cos_table,
                      const float* sin_table, int64_t half, int64_t head_dim, float scale,
                      int64_t count, float* scores);

// Unnormalized softmax in place: scores[r] = exp(scores[r] - max_r scores[r]); returns the
// sum (count >= 1). Vectorized exp (Highway contrib/math, documented max error 1 ulp).
float softmax_exp(float* scores, int64_t count);

// out[i] = sum_r probs[r] * value(slots[r])[i] for i in [0, head_dim).
void attention_values(const float* probs, const float* values, const int32_t* slots,
                      int64_t head_dim, int64_t count, float* out);

// ---- Activation ----
// Exact-erf GELU in place, x[i] <- 0.5 x[i] (1 + erf(x[i] / sqrt 2)), vectorized; within a few
// fp32 ulps of the exact value (erfc via a Chebyshev fit with relative error < 1.2e-7).
void gelu(float* x, int64_t count);

}  // namespace kvc::cpu
