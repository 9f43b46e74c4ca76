// The engine's execution of a declarative rule (kvc/policy.h, kvc_rule): which entries of each
// group survive, with the one selection of kvc/selection.hpp. It owns the rule's state (the
// step counter and, for lazy rules, each group's protected entries and size), so a plugin that
// sets a rule never runs code after create.
//
// Groups: a (layer, head) for KVC_SCOPE_PER_HEAD, a layer for KVC_SCOPE_PER_LAYER (its heads
// hold the same entries), the whole cache for KVC_SCOPE_SHARED. Decisions of a per-head or
// per-layer rule in layer l read only layer l's view, so they can be taken layer by layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvc/policy.h"

namespace kvc {

// The most queries the windowed signals may cover: each cache entry keeps one value per query
// of the window.
inline constexpr int64_t kMaxSignalWindow = 65536;

class RuleEngine {
 public:
  // `rule` and its arrays are the plugin's (valid until destroy); `trigger_size` is the
  // setup's. n_layers / n_heads may be 0 (a configuration check without a model): only
  // validate() and the size queries are used then.
  RuleEngine(const kvc_rule& rule, int64_t trigger_size, int32_t n_layers, int32_t n_heads);

  // The checks of the rule's fields that kvc/policy.h states (sizes, signals, scope and
  // allocation, pooling, layer budgets against the model); throws KVC_ERR_POLICY with `bad`
  // prefixed. `signals` is the setup's request, which must include the rule's signals.
  void validate(uint32_t signals, const std::string& bad) const;

  // The most entries one (layer, head) can hold after a decision (the setup's capacity must
  // be at least this, or -1); -1 when it depends on the model's head count and there is none.
  int64_t max_keep_per_head() const;

  // The rule as given (its arrays are the plugin's) and the setup's trigger size: what a
  // device backend needs to run the same decision (core/cuda/rule_math.h).
  const kvc_rule& rule() const { return rule_; }
  int64_t trigger_size() const { return trigger_size_; }

  // Forgets per-text state (after the cache was emptied).
  void reset();
  // Counts a step (every step, whatever it appended and whether or not anything is evicted).
  void count_step() { ++steps_; }
  int64_t steps() const { return steps_; }

  // Whether some group is over its size, given the entries of every (layer, head),
  // [n_layers * n_heads] row-major.
  bool over(const int64_t* counts) const;

  // Which layers a decision reads, so that a block of steps can run layer by layer:
  //   PerLayer    per-head and per-layer scopes: layer l's decision reads layer l only;
  //   LayerZero   the shared scope scored by layer 0 alone (or by positions and tokens): one
  //               decision from layer 0, the same for every layer;
  //   WholeModel  the shared scope scored by other layers: only after every layer has run.
  enum class Locality { PerLayer, LayerZero, WholeModel };
  Locality locality() const;
  // Whether a group of `layer` is over its size (counts as for over()).
  bool over_layer(int32_t layer, const int64_t* counts) const;
  // The decision of one layer at step `step` (the count step `step` would have), reading only
  // that layer's heads of `view` and writing only their lists (for LayerZero: layer 0, the
  // plan shared). Returns whether anything leaves; the plan's kind is set as by decide().
  bool decide_layer(int32_t layer, int64_t step, const kvc_cache_view& view, kvc_plan& plan);

  // Writes a plan for every group over its size: KEEP lists after a full selection (identity
  // lists for the other groups), EVICT lists on a lazy step between refreshes (empty for the
  // other groups); or leaves the plan at NOTHING when nothing is evicted. `view.n_new > 1` (a multi-token step) always
  // runs the full selection. Throws KVC_ERR_INTERNAL when the view lacks what the rule reads.
  void decide(const kvc_cache_view& view, kvc_plan& plan);

 private:
  struct GroupState {
    std::vector<int64_t> protected_positions;  // lazy: ascending original positions
    int64_t size = -1;                          // lazy + adaptive: size after the last refresh
  };
  struct Candidate {  // a heavy candidate: its score, and what breaks score ties
    double score;
    double tie;
    int64_t position;
    int32_t head;
    int32_t rank;
    bool operator<(const Candidate& o) const;
  };
  struct Layout {  // one group's spans, in ranks
    int64_t n = 0, sinks = 0, middle_end = 0, separator_floor = 0;
  };

  struct Step;
  Step step_kind(int64_t step, const kvc_cache_view& view) const;
  void unchanged(const Step& s, const kvc_cache_view& view, int64_t gi, kvc_plan& plan) const;
  bool reduce(const Step& s, const kvc_cache_view& view, int32_t layer, int32_t head,
              int64_t gi, int64_t target, GroupState& state, kvc_plan& plan);
  bool reduce_shared(const Step& s, const kvc_cache_view& view, int64_t n_heads_checked,
                     kvc_plan& plan);
  bool reduce_layer(const Step& s, const kvc_cache_view& view, int32_t layer, kvc_plan& plan);
  int64_t heavy_of_layer(int32_t layer) const;
  int64_t keep_of_layer(int32_t layer) const;  // sink + recent + separator + heavy
  int64_t group_limit(int32_t layer) const;    // per (layer, head) trigger
  bool is_separator(int32_t token) const;
  Layout layout(const kvc_head_view& h) const;
  bool kept_separator(const kvc_head_view& h, const Layout& g, int64_t rank) const;
  // The group's heavy-signal scores per rank (aggregated over heads, pooled), in scores_.
  void score_group(const kvc_cache_view& view, int32_t layer, int32_t head, const Layout& g);
  const float* signal(const kvc_cache_view& view, int64_t head_index, uint32_t flag) const;

  // Full selection of one group with `heavy` heavy entries; writes the kept ranks to `out`
  // and returns their count; the heavy picks are left in picked_ (ascending ranks).
  int64_t select_group(const kvc_cache_view& view, int32_t layer, int32_t head,
                       const kvc_head_view& h, int64_t heavy, int32_t* out);
  // Ada-KV: one layer's full selection with its heads competing for the heavy budget.
  void select_layer_adaptive(const kvc_cache_view& view, int32_t layer, kvc_plan& plan,
                             bool remember);
  // Lazy, between refreshes: the ranks of the `k` entries that leave the group (its oldest
  // unprotected candidates, then its oldest protected ones), ascending, into `out`.
  int64_t evict_fifo(GroupState& state, const kvc_head_view& h, int64_t k, int32_t* out);

  kvc_rule rule_;
  int64_t trigger_size_;
  int32_t n_layers_, n_heads_;
  std::vector<int32_t> separators_;  // sorted, unique
  std::vector<int32_t> score_layers_;
  int64_t steps_ = 0;
  std::vector<GroupState> groups_;
  // Scratch, reused across decisions so that steady decoding does not allocate.
  std::vector<double> scores_, raw_, ties_;
  std::vector<int64_t> candidates_, picked_, victims_;
  std::vector<uint8_t> keep_;
  std::vector<Candidate> pool_, own_;
  std::vector<std::vector<uint8_t>> head_keep_;
  std::vector<std::vector<double>> head_scores_;
};

}  // namespace kvc
