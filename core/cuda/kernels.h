// Launchers of the CUDA backend's kernels (kernels.cu). 16-bit buffers are passed as void*
// with `bf16` choosing bfloat16 over float16; everything else is float32 or int32.
// All launches are asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kvc::cuda {

// The device mirror of the per-(layer, head) rank tables and slot arrays, as kernels see it.
struct DeviceCache {
  void* keys = nullptr;    // [n_heads_total][slot_cap][head_dim], pre-rotary
  void* values = nullptr;  // [n_heads_total][slot_cap][head_dim]
  float* acc = nullptr;    // [n_heads_total][slot_cap] accumulated attention (by slot)
  float* last = nullptr;   // [n_heads_total][slot_cap] last-step attention (by slot)
  float* norm = nullptr;   // [n_heads_total][slot_cap] key L2 norm (by slot)
  // The windowed signals' rings, [n_heads_total][slot_cap][window], entry query % window: the
  // probability each of the last `window` queries gave the slot, and whether it was at least
  // uniform (1 / keys attended). NULL when not requested.
  float* window_ring = nullptr;
  uint8_t* pivotal_ring = nullptr;
  int window = 0;
  int32_t* slot_table = nullptr;  // [n_heads_total][table_cap] rank -> slot
  int32_t* pos_table = nullptr;   // [n_heads_total][table_cap] rank -> original position
  int32_t* sizes = nullptr;       // [n_heads_total] entries per head
  // [n_heads_total][table_cap] rank -> token id (the device rule's separators); NULL: not kept.
  int32_t* tok_table = nullptr;
  // [n_heads_total][slot_cap] the device rule's lazy protection by slot (append_kv clears the
  // new slot's); NULL unless the rule runs on the device.
  uint8_t* protect = nullptr;
  int64_t slot_cap = 0;
  int64_t table_cap = 0;
  int n_heads = 0;  // per layer
  int head_dim = 0;
};

// x[t] = embed[tokens[t]] (fp32).
void embed(const void* table, bool bf16, const int32_t* tokens, int n, int hidden, float* x,
           cudaStream_t stream);

// out[t] = LN(x[t]) * w + b, rounded to 16 bits.
void layer_norm(const float* x, const float* w, const float* b, float eps, int n, int dim,
                void* out, bool bf16, cudaStream_t stream);

// Replays plans: head i keeps ranks gather_ranks[offset[i] ...+count[i]) (count < 0: none).
// `scratch` holds 3 * n_heads_total * table_cap int32 (slots, positions, tokens).
void gather_tables(const DeviceCache& c, int n_heads_total, const int32_t* offset,
                   const int32_t* count, const int32_t* gather_ranks, int32_t* scratch,
                   cudaStream_t stream);
// Writes ranks [first[i], sizes[i]) of head i from slots/positions/tokens[entry_offset[i] ...]
// (tokens only where the cache keeps tok_table) and copies `sizes` into the cache.
void write_tables(const DeviceCache& c, int n_heads_total, const int32_t* sizes,
                  const int32_t* first, const int32_t* entry_offset, const int32_t* slots,
                  const int32_t* positions, const int32_t* tokens, cudaStream_t stream);

// For layer `layer`: qkv = GEMM output [n][3*hidden] (no bias). Writes the n new keys
// (pre-rotary) and values of every head into their slots (ranks sizes-n .. sizes-1), resets
// their signals and key norms, and writes the rotated queries q [n][hidden] (fp32).
void append_kv(const DeviceCache& c, int layer, const float* qkv, const float* qkv_bias, int n,
               int64_t first_position, bool shift, const float* cos, const float* sin,
               int rotary_ndims, bool bf16, float* q, cudaStream_t stream);

// Causal attention of the n new queries of `layer` over each head's table (rank r rotated
// with r under shift, pos_table[r] otherwise). ctx [n][hidden] (16-bit). `scores` holds
// n_heads * n * max_visible floats. Signals: acc += p (want_acc); last = p of the final query
// (want_last); with the rings, query t (number first_query + t) writes its ring entries (only
// the last `window` queries of the block do, so no two of them share an entry).
void attention(const DeviceCache& c, int layer, const float* q, int n, int64_t max_visible,
               bool shift, const float* cos, const float* sin, int rotary_ndims, float scale,
               bool want_acc, bool want_last, int64_t first_query, bool bf16, float* scores,
               void* ctx, cudaStream_t stream);

// The signals computed when a policy decides, by slot ([n_heads_total][slot_cap], NULL: not
// wanted): window = the ring's mean, pivotal = the ring's count, cosine = the cosine of each
// stored (16-bit, pre-rotary) key to the mean of the head's unit keys (0 for a zero key).
void derive_signals(const DeviceCache& c, int n_heads_total, bool bf16, float* window,
                    float* pivotal, float* cosine, cudaStream_t stream);

// out = gelu(in + bias) (exact erf GELU), rounded to 16 bits; [n][width].
void bias_gelu(const float* in, const float* bias, int n, int width, void* out, bool bf16,
               cudaStream_t stream);

// x = x + (a + a_bias)                          when m == nullptr (sequential, first half)
// x = ((m + m_bias) + (a + a_bias)) + x         parallel residual
// x = (m + m_bias) + x                          when a == nullptr (sequential, second half)
void residual(float* x, const float* a, const float* a_bias, const float* m,
              const float* m_bias, int n, int hidden, cudaStream_t stream);

}  // namespace kvc::cuda
