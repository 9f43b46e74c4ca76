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
  bool extrapolated = false;  // predicted at a rotary position >= max_position_embeddings
};
using TokenSink = std::function<void(const TokenRecord&)>;

// Running sums of one file or of a whole run.
struct Tally {
  double nll_sum = 0;
  int64_t scored = 0;
  int64_t cache_max = 0;
  double cache_sum = 0;  // cache size after each scored step, summed
  int64_t extrapolated = 0;

  void add(const TokenRecord& r) {
    nll_sum += r.nll;
    ++scored;
    cache_max = std::max(cache_max, r.cache);
    cache_sum += static_cast<double>(r.cache);
    extrapolated += r.extrapolated ? 1 : 0;
  }
  void merge(const Tally& other) {
    nll_sum += other.nll_sum;
    scored += other.scored;
    cache_max = std::max(cache_max, other.cache_max);
    cache_sum += other.cache_sum;
    extrapolated += other.extrapolated;
  }
  double ppl() const { return scored ? std::exp(nll_sum / static_cast<double>(scored)) : NAN; }
  double cache_mean() const { return scored ? cache_sum / static_cast<double>(scored) : 0.0; }
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
};

// How many tokens of each text a run scores under the num_eval_tokens cap.
std::vector<int64_t> score_counts(const std::vector<Text>& texts, std::optional<int64_t> cap,
                                  Protocol protocol, int64_t chunk_size);

// Scores `counts[f]` tokens of each text under `run`, calling `sink` (may be empty) for each
// scored token in order, with a progress line on stderr.
RunResult score_run(const LoadedModel& model, const EvalRun& run, const std::vector<Text>& texts,
                    const std::vector<int64_t>& counts, const ProtocolSettings& settings,
                    const TokenSink& sink);

}  // namespace kvc::hosts
