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

// A block of queries of one head, each seeing one key more than the one before (a prefill:
// no entry leaves between them). Query q sees the first first_count + q keys:
// scores[q * ld_scores + r] = scale * <queries[q], column r of keys_t> for those r (a few
// past them may be written too). keys_t holds the keys rotated and transposed, [head_dim] rows
// of ld_keys floats, ld_keys a multiple of attention_key_padding() (padding zero). Vectorized
// over keys, so no sum across lanes per key; rounds differently from attention_scores.
void attention_scores_block(const float* queries, int64_t n_queries, int64_t head_dim,
                            const float* keys_t, int64_t ld_keys, int64_t first_count,
                            float scale, float* scores, int64_t ld_scores);
int64_t attention_key_padding();

// out[q * ld_out + i] = sum over r < first_count + q of probs[q * ld_probs + r] *
// value(slots[r])[i]: attention_values for such a block of queries, bit for bit (each sum in
// the order of r). A query's probabilities past its own keys (up to the next three queries'
// keys) must be zero.
void attention_values_block(const float* probs, int64_t ld_probs, int64_t n_queries,
                            const float* values, const int32_t* slots, int64_t head_dim,
                            int64_t first_count, float* out, int64_t ld_out);

// ---- Activation ----
// Exact-erf GELU in place, x[i] <- 0.5 x[i] (1 + erf(x[i] / sqrt 2)), vectorized; within a few
// fp32 ulps of the exact value (erfc via a Chebyshev fit with relative error < 1.2e-7).
void gelu(float* x, int64_t count);

}  // namespace kvc::cpu
