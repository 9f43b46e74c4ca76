// Launchers of the device rule (rule_kernels.cu): the engine's rule (rule_math.h, the same
// code the host tests run against RuleEngine) decided where the signals live, the plan applied
// to the device tables, the evicted ranks handed to the host; the split-K decode attention;
// the live-entry signal gather. All asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.h"
#include "rule_math.h"

namespace kvc::cuda {

struct DeviceRuleArgs {
  rule_math::Rule rule;      // its arrays in device memory
  DeviceCache c;             // tables, sizes and (for tokens) tok_table
  const int32_t* tok_table;  // [n_heads_total][table_cap] rank -> token id, or NULL
  const float* heavy;        // the heavy signal by slot, [n_heads_total][slot_cap]
  const float* tie;          // the tie signal by slot, or NULL
  uint8_t* protect;          // lazy: protection by slot, [n_heads_total][slot_cap]
  int64_t* size_state;       // lazy + adaptive: each head's size after the last refresh, or -1
  rule_math::Scratch sc;     // device scratch (DeviceRuleScratch)
  rule_math::PlanOut out;    // device plan lists and counts
  int32_t* evicted;          // [n_heads_total]: per group block, whether anything left
};

// One decision (RuleEngine::decide at step `step` after a step of `n_new` entries): writes
// the plan lists (KEEP after a full selection, EVICT between lazy refreshes) and `evicted`.
// Grids: one block per (layer, head) for the per-head uniform rule, one per layer for the
// per-layer scope and adaptive allocation, one block for the shared scope.
void decide_rule(const DeviceRuleArgs& a, int64_t step, int64_t n_new, cudaStream_t stream);

// Applies the decision just written (kind KEEP or EVICT, list 0 for every head when shared)
// to the device tables (slot, position and token tables compacted in rank order, sizes), and
// writes for the host each head's evicted ranks: counts into evict_count[i] and the first
// `packet_ranks` of them into evict_packet[i * packet_ranks ...], all of them into
// evict_all[i * stride ...]. `kind_shared` = device int2 {kind, shared}.
void apply_device_plan(const DeviceCache& c, int32_t* tok_table, int n_heads_total,
                       const rule_math::PlanOut& plan, const int32_t* kind_shared,
                       int32_t* scratch, int32_t* evict_count, int32_t* evict_packet,
                       int packet_ranks, int32_t* evict_all, cudaStream_t stream);

// The plan's kind from the per-group `evicted` flags (any set: `kind`, else NOTHING), as the
// int2 {kind, shared} apply_device_plan reads.
void finish_decision(const int32_t* evicted, int n_flags, int32_t kind, int32_t shared,
                     int32_t* kind_shared, cudaStream_t stream);

// Live entries only: out[offset[i] + r] = by_slot[i][slot_table[i][r]] for r < sizes[i].
void gather_live(const DeviceCache& c, int n_heads_total, const float* by_slot,
                 const int64_t* offset, float* out, cudaStream_t stream);

// Decode attention (one query per head, `n` == 1) split over the keys (flash-decoding): pass 1
// scores `splits` chunks per head (coalesced 16-byte key and value loads, one warp per key row
// group) into `scores` and per-split (max, sum, partial output); pass 2 merges them
// (rule_math::merge_*), writes ctx and the signals as attention() does. `partials` holds
// n_heads * splits * (head_dim + 2) floats. Same contract as attention() for n == 1.
void attention_split_k(const DeviceCache& c, int layer, const float* q, int64_t max_visible,
                       bool shift, const float* cos, const float* sin, int rotary_ndims,
                       float scale, bool want_acc, bool want_last, int64_t query, bool bf16,
                       int splits, float* scores, float* partials, void* ctx,
                       cudaStream_t stream);

}  // namespace kvc::cuda
