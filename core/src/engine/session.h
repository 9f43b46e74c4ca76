// kvc::Session: one sequence, its KV cache, its compute state and its eviction policy. The C
// handle kvc_session (api/handles.h) owns one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "kvc/kvc.h"
#include "kvc/policy.h"
#include "policy/policy.h"

namespace kvc {

// Tokens per forward pass kvc_session_score accepts (the CPU forward's internal block).
inline constexpr int32_t kMaxScoreBlock = 256;

struct SessionConfig {
  kvc_position_mode positions = KVC_POSITIONS_SHIFT;
  int64_t max_entries = 0;  // 0 = no limit
  // The policy and its parameters; no policy = the built-in full cache.
  std::shared_ptr<const LoadedPolicy> policy;
  const PolicyParams* params = nullptr;
};

class Session {
 public:
  Session(const Model& model, const SessionConfig& config);

  // kvc_session_step: appends tokens, runs the model, then consults the policy.
  void step(const int32_t* tokens, int64_t n, kvc_logits which, float* logits,
            size_t logits_capacity);
  // kvc_session_score.
  void score(const int32_t* tokens, int64_t n, const kvc_score_options& options, float* nll,
             size_t nll_capacity);
  // How the last score() ran (kvc_session_score_report).
  kvc_score_report score_report() const;
  // kvc_session_policy_report: fixed when the session is created.
  const std::string& policy_report() const { return policy_report_; }
  // kvc_session_cache_scores: the ranking signal's values for one (layer, head), oldest first.
  const std::vector<float>& cache_scores(int32_t layer, int32_t head);
  void reset();
  // kvc_session_keep: manual eviction of one or every (layer, head).
  void keep(int32_t layer, int32_t head, const int32_t* ranks, size_t n_ranks);
  kvc_cache_stats stats() const;

  const Model& model() const { return model_; }
  const KvCache& cache() const { return cache_; }

 private:
  class BlockHook;
  struct ScoreOutputs;
  void score_tokens(const int32_t* tokens, int64_t n, const ScoreOutputs& out);
  void score_blocks(const int32_t* tokens, int64_t n, int64_t block, const ScoreOutputs& out);
  // Why a block of `block` tokens cannot be scored layer by layer here ("" if it can).
  std::string block_obstacle(int64_t block) const;
  void consult_policy(int64_t n_new);
  void check_room(int64_t n_new) const;
  // A plan over the session's reused buffers, `stride` ranks per list.
  kvc_plan plan_buffers(int64_t stride);
  static int64_t host_tokenize(void* host_data, const char* text, int32_t* ids, size_t capacity);

  const Model& model_;
  KvCache cache_;
  std::unique_ptr<ComputeBackend> backend_;  // CpuForward, or the model's device
  std::unique_ptr<PolicyInstance> policy_;   // null: the built-in full cache
  uint32_t signals_ = 0;
  kvc_position_mode positions_;
  int64_t max_entries_;
  int64_t n_seen_ = 0;
  int64_t n_evictions_ = 0;
  std::vector<int32_t> plan_ranks_;
  std::vector<int64_t> plan_counts_;
  std::vector<int64_t> counts_;
  std::vector<float> logits_;
  std::string policy_report_;
  int32_t report_block_ = 0;
  std::string report_path_, report_reason_;
};

}  // namespace kvc
