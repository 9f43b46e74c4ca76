// kvc-eval's optional outputs beyond the result JSON (docs/hosts.md, "Output files"):
//   nll_<mode>.tsv              per scored token (--save_nll)
//   cache_trace_<mode>.jsonl    kept entries of every (layer, head) every N steps (--trace_cache)
//   loss_vs_position.svg/.png   mean NLL against position, one line per run
//   cache_trace_<mode>.svg/.png kept positions against step for chosen heads
//   ppl_budget_sweep.svg/.png   PPL (and KL) against cache size (--budgets)
// Every file appears only complete (AtomicFile): an error leaves none half-written, and an
// interrupted run still commits what it has (its JSON says "interrupted").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "figure.h"
#include "files.h"
#include "kvc/kvc.h"
#include "scoring.h"

namespace kvc::hosts {

// Tab-separated, one header line, one row per scored token:
//   file position token nll cache evicted [kl top1]
// (pandas.read_csv(path, sep="\t") or numpy.genfromtxt(path, delimiter="\t", names=True,
// dtype=None, encoding="utf-8")).
class NllDump {
 public:
  NllDump(const std::filesystem::path& path, bool with_comparison);
  void add(const TokenRecord& record, const std::string& file_name);
  void commit();

 private:
  AtomicFile file_;
  bool comparison_;
  std::string buffer_;
};

// "L:H,L:H" with negative layers counted from the end ("-1:0": the last layer's head 0),
// resolved against the model; UsageError naming --trace_heads and the item otherwise.
std::vector<std::pair<int32_t, int32_t>> parse_trace_heads(const std::string& text,
                                                           int32_t n_layers, int32_t n_heads);

// One JSON object per line, every `every` steps:
//   {"file": name, "step": tokens fed since the cache was emptied,
//    "heads": [[{"positions": [...], "scores": [...] or null} per head] per layer]}
// positions are the entries' indexes in the text, oldest first; scores the policy's ranking
// signal for those entries (null when it ranks by none). The chosen heads are kept for the plot.
class CacheTrace {
 public:
  CacheTrace(const std::filesystem::path& path, const kvc_model_info& info,
             std::vector<std::pair<int32_t, int32_t>> plot_heads);
  void capture(const kvc_session* session, const std::string& file_name, int64_t step);
  void commit() { file_.commit(); }
  // One panel per chosen head: kept position against step.
  std::vector<Panel> panels() const;

 private:
  AtomicFile file_;
  int32_t n_layers_, n_heads_;
  std::vector<std::pair<int32_t, int32_t>> plot_heads_;
  std::vector<Series> plot_points_;  // per chosen head
  int64_t offset_ = 0;               // steps of earlier files (the plot's x runs on)
  int64_t last_step_ = 0;
  std::string last_file_;
};

// Mean NLL at each position over the files that reach it.
class LossByPosition {
 public:
  void add(const TokenRecord& r);
  // The running mean over `window` positions (0: automatic, about 1/40 of the longest text,
  // at least 1) of the per-position mean; x = position.
  Series series(const std::string& name, int64_t window, int64_t* used_window) const;
  bool empty() const { return count_.empty(); }
  // {"sum": [...], "count": [...]} per position, for shard results; merge() adds one back.
  nlohmann::ordered_json json() const;
  void merge(const nlohmann::ordered_json& j);

 private:
  std::vector<double> sum_;
  std::vector<int64_t> count_;
};

}  // namespace kvc::hosts
