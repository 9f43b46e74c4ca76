// The GPT-NeoX forward pass on the CPU (fp32 compute over fp32/bf16/fp16 weights).
//
//   x = embed_in[token]
//   for each layer:
//     a = attention(LN1(x))                      fused QKV, per head [q | k | v]
//     parallel residual:    x = x + a + MLP(LN2(x))
//     sequential residual:  x = x + a;  x = x + MLP(LN2(x))
//   logits = embed_out · LN_final(x)
//
// attention: rotary on the first rotary_ndims channels (rotate_half), causal softmax over the
// (layer, head) cache plus the new tokens, probabilities accumulated into the cache's signals
// when a policy asked for them. MLP: dense_h_to_4h, exact-erf GELU, dense_4h_to_h.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/thread_pool.h"
#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "kvc/kvc.h"
#include "model/weights.h"

namespace kvc {

// cos/sin of the rotary angles, one row of rotary_ndims/2 values per position, grown on demand.
class RotaryTable {
 public:
  RotaryTable(int rotary_ndims, float base);
  void ensure(int64_t n_positions);
  const float* cos_row(int64_t pos) const { return &cos_[static_cast<size_t>(pos) * half_]; }
  const float* sin_row(int64_t pos) const { return &sin_[static_cast<size_t>(pos) * half_]; }
  // The whole tables, [position][half] floats (valid up to the last ensure()).
  const float* cos_table() const { return cos_.data(); }
  const float* sin_table() const { return sin_.data(); }
  int half() const { return half_; }

 private:
  int half_;
  std::vector<float> inv_freq_;
  std::vector<float> cos_, sin_;
  int64_t n_ = 0;
};

// Per-session compute state: scratch buffers, the rotary table and the worker threads. The
// weights are shared (read-only) between sessions.
class CpuForward final : public ComputeBackend {
 public:
  CpuForward(const ModelWeights& weights, int n_threads);

  // Appends the request's tokens to `cache` and computes what it asks for. Long batches are
  // processed in blocks; the result does not depend on the block size beyond fp32 rounding.
  void run(const ForwardRequest& request, KvCache& cache) override;
  bool supports_per_query() const override { return true; }

  cpu::ThreadPool& pool() { return pool_; }

 private:
  void run_block(const ForwardRequest& request, int64_t offset, int64_t n, KvCache& cache);
  // Appends the block's keys and values and attends its queries: all keys first (causal
  // prefill), or, with `hook`, one query at a time with the hook after each.
  void attention(int layer, int64_t n, int64_t offset, int64_t first_position,
                 const int32_t* tokens, kvc_position_mode mode, uint32_t signals, QueryHook* hook,
                 KvCache& cache);
  // One query of one head over the first `visible` entries of its cache, rotated with
  // position `qpos`; writes the head's context row and adds the probabilities to the signals.
  void attend(HeadCache& hc, const float* qkv_row, int64_t qpos, int64_t visible,
              kvc_position_mode mode, uint32_t signals, int tid, float* ctx_row);
  // The block's n queries of one head, their keys the last n entries (nothing leaves between
  // them): query t sees the entries up to its own.
  void attend_block(HeadCache& hc, const float* qkv, int64_t row_stride, int64_t n,
                    int64_t first_position, kvc_position_mode mode, uint32_t signals, int tid,
                    float* ctx, int64_t ctx_stride);
  void rotate_query(const float* qsrc, int64_t pos, float* q) const;
  void finish_query(HeadCache& hc, float* scores, int64_t visible, uint32_t signals,
                    float* ctx_row);
  static void add_signals(HeadCache& hc, const float* probs, int64_t visible, uint32_t signals);
  void ensure_scratch(int64_t n);

  const ModelWeights& w_;
  const ModelConfig& cfg_;
  cpu::ThreadPool pool_;
  RotaryTable rotary_;
  float scale_;
  int64_t scratch_tokens_ = 0;
  std::vector<float> x_, h_, qkv_, ctx_, attn_, mlp_, mlp2_;
  std::vector<std::vector<float>> thread_scores_;  // per worker thread
  std::vector<std::vector<float>> thread_query_;   // per worker thread: the rotated query
  struct BlockScratch {  // per worker thread, for attend_block
    std::vector<float> keys_t, queries, scores;
  };
  std::vector<BlockScratch> thread_block_;
};

}  // namespace kvc
