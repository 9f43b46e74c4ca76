// kvc-eval's scoring protocols (docs/policies.md §6): what one run feeds the engine and what it
// records per scored token.
//
//   stream   each file is fed one token at a time under the run's policy (dense: the full
//            cache, sized for the longest file); the NLL of token i+1 comes from the logits of
//            the step that fed token i, before the policy evicts anything;
//   chunked  the seed's baseline: 512-token chunks scored independently with a fresh cache;
//   sliding  the window before each scored token recomputed from scratch (every `stride`).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime.h"
#include "texts.h"

namespace kvc::hosts {

enum class Protocol { Stream, Chunked, Dense, Sliding };
const char* protocol_name(Protocol p);

struct EvalRun {
  RunSpec spec;
  Protocol protocol = Protocol::Stream;
  std::string label;    // file name part: ppl_results_{label}.json
  std::string display;  // table name
};

// The settings of the protocols.
struct ProtocolSettings {
  int64_t chunk_size = 512;  // chunked
  int64_t window = 256;      // sliding
  int64_t stride = 1;        // sliding
  bool continuous = false;   // stream, dense: one cache across files
  int32_t block_size = 0;    // stream, dense: tokens per forward pass (0: the library's)
};

// One scored token.
struct TokenRecord {
  size_t file = 0;        // index into the texts
  int64_t position = 0;   // index in its text of the predicted token (>= 1)
  int32_t token = 0;      // the predicted token's id
  double nll = 0;         // nats
  int64_t cache = 0;      // most entries in any (layer, head) after the step
  int64_t evicted = 0;    // entries the step evicted, summed over (layer, head)
  bool extrapolated = false;  // predicted at a rotary position >= max_position_embeddings
  // Against the full cache (--compare_to dense), else NaN / -1:
  double kl = NAN;        // KL(dense || policy) of the next-token distributions, nats
  int top1 = -1;          // 1 when both put the same token first, else 0
};
using TokenSink = std::function<void(const TokenRecord&)>;

// Running sums of one file or of a whole run.
struct Tally {
  double nll_sum = 0;
  int64_t scored = 0;
  int64_t cache_max = 0;
  double cache_sum = 0;  // cache size after each scored step, summed
  int64_t extrapolated = 0;
  int64_t evicted = 0;
  double kl_sum = 0;     // over the `compared` tokens
  int64_t top1_hits = 0;
  int64_t compared = 0;

  void add(const TokenRecord& r) {
    nll_sum += r.nll;
    ++scored;
    cache_max = std::max(cache_max, r.cache);
    cache_sum += static_cast<double>(r.cache);
    extrapolated += r.extrapolated ? 1 : 0;
    evicted += r.evicted;
    if (r.top1 >= 0) {
      kl_sum += r.kl;
      top1_hits += r.top1;
      ++compared;
    }
  }
  void merge(const Tally& other) {
    nll_sum += other.nll_sum;
    scored += other.scored;
    cache_max = std::max(cache_max, other.cache_max);
    cache_sum += other.cache_sum;
    extrapolated += other.extrapolated;
    evicted += other.evicted;
    kl_sum += other.kl_sum;
    top1_hits += other.top1_hits;
    compared += other.compared;
  }
  double ppl() const { return scored ? std::exp(nll_sum / static_cast<double>(scored)) : NAN; }
  double cache_mean() const { return scored ? cache_sum / static_cast<double>(scored) : 0.0; }
  double mean_kl() const { return compared ? kl_sum / static_cast<double>(compared) : NAN; }
  double top1_agreement() const {
    return compared ? static_cast<double>(top1_hits) / static_cast<double>(compared) : NAN;
  }
  nlohmann::ordered_json cache_json() const {
    return {{"max", cache_max}, {"mean", cache_mean()}};
  }
};

struct RunResult {
  Tally total;
  std::vector<std::pair<size_t, Tally>> files;  // (text index, its tally), files scored
  double wall_s = 0;
  // How the library scored (kvc_session_score_report of the last call).
  int32_t block_size = 0;
  std::string path, path_reason;
  nlohmann::ordered_json policy_report;  // kvc_session_policy_report of the run's session
  bool interrupted = false;  // stopped early by SIGINT/SIGTERM: the tallies cover what ran
};

// What a run records beyond the NLL, all optional.
struct ScoreHooks {
  TokenSink sink;  // every scored token, in order
  // Streamed runs: after every `trace_every` tokens fed since the cache was emptied, `on_trace`
  // sees the session (its cache, evictions done).
  int64_t trace_every = 0;
  std::function<void(const kvc_session* session, size_t file, int64_t step)> on_trace;
  // Streamed policy runs: a full-cache session of this spec scores the same tokens in
  // lockstep, and each TokenRecord gets the KL divergence and top-1 agreement against it.
  const RunSpec* compare_to = nullptr;
  // Printed on stderr when the run's session exists: "<program>: <label>: <variant>".
  std::string program;
};

// How many tokens of each text a run scores under the num_eval_tokens cap.
std::vector<int64_t> score_counts(const std::vector<Text>& texts, std::optional<int64_t> cap,
                                  Protocol protocol, int64_t chunk_size);

// Scores `counts[f]` tokens of each text under `run`, with a progress line on stderr. Stops
// early, with `interrupted` set, when interrupted() turns true (checked between scoring calls,
// about once a second).
RunResult score_run(const LoadedModel& model, const EvalRun& run, const std::vector<Text>& texts,
                    const std::vector<int64_t>& counts, const ProtocolSettings& settings,
                    const ScoreHooks& hooks);

}  // namespace kvc::hosts
