// The declarative rule, run by the engine (rule_engine.h; semantics in kvc/policy.h and
// docs/policies.md).
#include "policy/rule_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <kvc/selection.hpp>

#include "common/error.h"
#include "policy/policy.h"

namespace kvc {

namespace {

constexpr uint32_t kKnownSignals = KVC_SIGNAL_ACC_ATTENTION | KVC_SIGNAL_LAST_ATTENTION |
                                   KVC_SIGNAL_KEY_NORM | KVC_SIGNAL_WINDOW_ATTENTION |
                                   KVC_SIGNAL_KEY_MEAN_COSINE | KVC_SIGNAL_PIVOTAL_COUNT;

bool one_known_signal(uint32_t s) { return s != 0 && (s & (s - 1)) == 0 && (s & kKnownSignals); }


// A C plugin may store any int in an enum field; loading an out-of-range enum is UB in C++.
template <class E>
int32_t raw_enum(const E& e) {
  int32_t v = 0;
  static_assert(sizeof e == sizeof v);
  std::memcpy(&v, &e, sizeof v);
  return v;
}

constexpr auto score_of_candidate = [](const auto& c) { return c.score; };

selection::Order order_of(const kvc_rule& r) {
  return r.heavy_order == KVC_ORDER_SMALLEST ? selection::Order::Smallest
                                             : selection::Order::Largest;
}

}  // namespace

// Candidates of one selection are ranked by `score`, then ordered (kvc/selection.hpp, rule 3)
// by the tie signal
// (larger first, a NaN after every number as for scores; 0 for all when the rule has none),
// then by original position (within a head: the older entry), then by head (Ada-KV's pooled
// ranking). The device's rule (core/cuda/rule_math.h) implements the same order.
bool RuleEngine::Candidate::operator<(const Candidate& o) const {
  const bool nan = std::isnan(tie), o_nan = std::isnan(o.tie);
  if (nan != o_nan) return o_nan;
  if (!nan && tie != o.tie) return tie > o.tie;
  if (position != o.position) return position < o.position;
  return head < o.head;
}

RuleEngine::RuleEngine(const kvc_rule& rule, int64_t trigger_size, int32_t n_layers,
                       int32_t n_heads)
    : rule_(rule), trigger_size_(trigger_size), n_layers_(n_layers), n_heads_(n_heads) {
  if (rule_.separator_size > 0 && rule_.separator_ids != nullptr) {
    separators_.assign(rule_.separator_ids, rule_.separator_ids + rule_.n_separator_ids);
    std::sort(separators_.begin(), separators_.end());
    separators_.erase(std::unique(separators_.begin(), separators_.end()), separators_.end());
  }
  if (rule_.score_layers != nullptr && rule_.n_score_layers > 0)
    score_layers_.assign(rule_.score_layers, rule_.score_layers + rule_.n_score_layers);
  else
    for (int32_t l = 0; l < n_layers_; ++l) score_layers_.push_back(l);
}

void RuleEngine::validate(uint32_t signals, const std::string& bad) const {
  auto need = [&](bool ok, const std::string& what) { require(ok, KVC_ERR_POLICY, bad + what); };
  const kvc_rule& r = rule_;
  need(r.sink_size >= 0 && r.recent_size >= 0 && r.separator_size >= 0 && r.heavy_size >= 0,
       "rule sizes must not be negative (sink " + std::to_string(r.sink_size) + ", recent " +
           std::to_string(r.recent_size) + ", separator " + std::to_string(r.separator_size) +
           ", heavy " + std::to_string(r.heavy_size) + ")");
  need(r.n_separator_ids == 0 || r.separator_ids != nullptr,
       "rule lists " + std::to_string(r.n_separator_ids) + " separator ids but the array is NULL");
  const int32_t scope = raw_enum(r.scope);
  need(scope == KVC_SCOPE_PER_HEAD || scope == KVC_SCOPE_SHARED || scope == KVC_SCOPE_PER_LAYER,
       "unknown scope " + std::to_string(scope));
  const int32_t order = raw_enum(r.heavy_order);
  need(order == KVC_ORDER_LARGEST || order == KVC_ORDER_SMALLEST,
       "unknown heavy_order " + std::to_string(order));
  const bool any_heavy = r.heavy_size > 0 || r.layer_heavy_sizes != nullptr;
  auto check_signal = [&](uint32_t s, const char* field) {
    need(one_known_signal(s), std::string(field) + " " + std::to_string(s) +
                                  " is not one KVC_SIGNAL_* flag");
    need((signals & s) != 0, std::string("the rule ranks by ") + field + " " +
                                 signal_name(s) + " but the setup does not request it in "
                                 "'signals'");
  };
  if (any_heavy) check_signal(r.heavy_signal, "heavy_signal");
  if (r.tie_signal != 0) check_signal(r.tie_signal, "tie_signal");
  const uint32_t windowed = KVC_SIGNAL_WINDOW_ATTENTION | KVC_SIGNAL_PIVOTAL_COUNT;
  if (((r.heavy_signal | r.tie_signal) & windowed) != 0 || (signals & windowed) != 0)
    need(r.signal_window >= 1 && r.signal_window <= kMaxSignalWindow,
         "signal_window " + std::to_string(r.signal_window) +
             " (WINDOW_ATTENTION and PIVOTAL_COUNT need a window in [1, " +
             std::to_string(kMaxSignalWindow) + "])");
  need(r.n_score_layers == 0 || r.score_layers != nullptr,
       "rule lists " + std::to_string(r.n_score_layers) + " score layers but the array is NULL");
  if (n_layers_ > 0)
    for (size_t i = 0; i < r.n_score_layers; ++i)
      need(r.score_layers[i] >= 0 && r.score_layers[i] < n_layers_,
           "score layer " + std::to_string(r.score_layers[i]) + " is outside the model's " +
               std::to_string(n_layers_) + " layers");
  need(r.update_interval >= 0,
       "update_interval " + std::to_string(r.update_interval) + " is negative");
  const int32_t pooling = raw_enum(r.pooling);
  need(pooling == KVC_POOLING_NONE || pooling == KVC_POOLING_AVG || pooling == KVC_POOLING_MAX,
       "unknown pooling " + std::to_string(pooling));
  if (pooling != KVC_POOLING_NONE)
    need(r.pool_kernel >= 1 && r.pool_kernel % 2 == 1,
         "pool_kernel " + std::to_string(r.pool_kernel) + " (pooling needs an odd width >= 1)");
  need((r.layer_heavy_sizes == nullptr) == (r.n_layer_heavy_sizes == 0),
       "layer_heavy_sizes and n_layer_heavy_sizes disagree (" +
           std::to_string(r.n_layer_heavy_sizes) + " sizes, array " +
           (r.layer_heavy_sizes ? "set" : "NULL") + ")");
  if (r.layer_heavy_sizes != nullptr) {
    need(scope != KVC_SCOPE_SHARED, "layer_heavy_sizes needs a per-head or per-layer scope");
    if (n_layers_ > 0)
      need(r.n_layer_heavy_sizes == static_cast<size_t>(n_layers_),
           "layer_heavy_sizes has " + std::to_string(r.n_layer_heavy_sizes) +
               " entries, the model has " + std::to_string(n_layers_) + " layers");
    for (size_t i = 0; i < r.n_layer_heavy_sizes; ++i)
      need(r.layer_heavy_sizes[i] >= 0, "layer_heavy_sizes[" + std::to_string(i) + "] = " +
                                            std::to_string(r.layer_heavy_sizes[i]) +
                                            " is negative");
  }
  const int32_t allocation = raw_enum(r.allocation);
  need(allocation == KVC_ALLOCATION_UNIFORM || allocation == KVC_ALLOCATION_ADAPTIVE,
       "unknown allocation " + std::to_string(allocation));
  if (allocation == KVC_ALLOCATION_ADAPTIVE) {
    need(scope == KVC_SCOPE_PER_HEAD, "ADAPTIVE allocation needs the per-head scope");
    need(r.allocation_floor >= 0.0 && r.allocation_floor <= 1.0,
         "allocation_floor " + std::to_string(r.allocation_floor) + " is outside [0, 1]");
  }
}

int64_t RuleEngine::heavy_of_layer(int32_t layer) const {
  if (rule_.layer_heavy_sizes != nullptr && layer >= 0 &&
      static_cast<size_t>(layer) < rule_.n_layer_heavy_sizes)
    return rule_.layer_heavy_sizes[layer];
  return rule_.heavy_size;
}

int64_t RuleEngine::keep_of_layer(int32_t layer) const {
  return rule_.sink_size + rule_.recent_size + rule_.separator_size + heavy_of_layer(layer);
}

int64_t RuleEngine::group_limit(int32_t layer) const {
  return rule_.layer_heavy_sizes != nullptr ? keep_of_layer(layer) : trigger_size_;
}

int64_t RuleEngine::max_keep_per_head() const {
  const int64_t base = rule_.sink_size + rule_.recent_size + rule_.separator_size;
  int64_t heavy = rule_.heavy_size;
  for (size_t i = 0; i < rule_.n_layer_heavy_sizes; ++i)
    heavy = std::max(heavy, rule_.layer_heavy_sizes[i]);
  if (rule_.allocation != KVC_ALLOCATION_ADAPTIVE) return base + heavy;
  if (n_heads_ <= 0) return -1;
  // One head may take its own floor and every pooled slot of its layer.
  const auto floor = static_cast<int64_t>(std::floor(rule_.allocation_floor * heavy + 1e-9));
  return base + n_heads_ * heavy - (n_heads_ - 1) * floor;
}

void RuleEngine::reset() {
  steps_ = 0;
  groups_.clear();
}

bool RuleEngine::is_separator(int32_t token) const {
  return std::binary_search(separators_.begin(), separators_.end(), token);
}

bool RuleEngine::over(const int64_t* counts) const {
  for (int32_t l = 0; l < n_layers_; ++l) {
    const int64_t* c = counts + static_cast<int64_t>(l) * n_heads_;
    if (rule_.allocation == KVC_ALLOCATION_ADAPTIVE) {
      int64_t total = 0;
      for (int32_t h = 0; h < n_heads_; ++h) total += c[h];
      if (total > n_heads_ * keep_of_layer(l)) return true;
      continue;
    }
    const int64_t limit = group_limit(l);
    for (int32_t h = 0; h < n_heads_; ++h)
      if (c[h] > limit) return true;
  }
  return false;
}

RuleEngine::Layout RuleEngine::layout(const kvc_head_view& h) const {
  Layout g;
  g.n = h.n_entries;
  g.sinks = std::min(rule_.sink_size, g.n);
  g.middle_end = g.n - std::min(rule_.recent_size, g.n - g.sinks);
  g.separator_floor = g.middle_end;  // none kept
  if (rule_.separator_size > 0 && !separators_.empty() && h.token_ids != nullptr) {
    int64_t found = 0;
    for (int64_t r = g.middle_end - 1; r >= g.sinks && found < rule_.separator_size; --r) {
      if (is_separator(h.token_ids[r])) {
        ++found;
        g.separator_floor = r;
      }
    }
  }
  return g;
}

bool RuleEngine::kept_separator(const kvc_head_view& h, const Layout& g, int64_t r) const {
  return r >= g.separator_floor && r < g.middle_end && h.token_ids != nullptr &&
         is_separator(h.token_ids[r]);
}

const float* RuleEngine::signal(const kvc_cache_view& view, int64_t i, uint32_t flag) const {
  const kvc_head_view& h = view.heads[i];
  const float* out = nullptr;
  switch (flag) {
    case KVC_SIGNAL_ACC_ATTENTION: out = h.acc_attention; break;
    case KVC_SIGNAL_LAST_ATTENTION: out = h.last_attention; break;
    case KVC_SIGNAL_KEY_NORM: out = h.key_norms; break;
    case KVC_SIGNAL_WINDOW_ATTENTION:
      out = view.window_attention ? view.window_attention[i] : nullptr;
      break;
    case KVC_SIGNAL_KEY_MEAN_COSINE:
      out = view.key_mean_cosine ? view.key_mean_cosine[i] : nullptr;
      break;
    case KVC_SIGNAL_PIVOTAL_COUNT:
      out = view.pivotal_count ? view.pivotal_count[i] : nullptr;
      break;
  }
  if (out == nullptr && h.n_entries > 0)
    fail(KVC_ERR_INTERNAL, std::string("the rule needs the signal ") + signal_name(flag) +
                               " but the cache view does not carry it");
  return out;
}

// Scores of the rule's group at (layer, head) per rank: the heavy signal aggregated over the
// group's heads (mean over a layer's heads, sum over the shared scope's layers and heads, in
// double so the sum's order does not matter at fp32 resolution), then pooled over the middle;
// and the tie signal alike, without pooling.
void RuleEngine::score_group(const kvc_cache_view& view, int32_t layer, int32_t head,
                             const Layout& g) {
  const int64_t L = g.n;
  const int32_t H = view.n_heads;
  auto aggregate = [&](uint32_t flag, std::vector<double>& out) {
    out.assign(static_cast<size_t>(L), 0.0);
    if (rule_.scope == KVC_SCOPE_PER_HEAD) {
      const float* s = signal(view, static_cast<int64_t>(layer) * H + head, flag);
      for (int64_t r = g.sinks; r < g.middle_end; ++r) out[r] = static_cast<double>(s[r]);
    } else if (rule_.scope == KVC_SCOPE_PER_LAYER) {
      for (int32_t h = 0; h < H; ++h) {
        const float* s = signal(view, static_cast<int64_t>(layer) * H + h, flag);
        for (int64_t r = g.sinks; r < g.middle_end; ++r) out[r] += s[r];
      }
      for (int64_t r = g.sinks; r < g.middle_end; ++r) out[r] /= H;
    } else {
      for (int32_t l : score_layers_)
        for (int32_t h = 0; h < H; ++h) {
          const float* s = signal(view, static_cast<int64_t>(l) * H + h, flag);
          for (int64_t r = g.sinks; r < g.middle_end; ++r) out[r] += s[r];
        }
    }
  };
  aggregate(rule_.heavy_signal, raw_);
  if (rule_.tie_signal != 0) aggregate(rule_.tie_signal, ties_);
  if (rule_.pooling == KVC_POOLING_NONE || rule_.pool_kernel <= 1) {
    scores_.swap(raw_);
    return;
  }
  // Pooling along rank order over the middle: neighbours outside it do not take part (AVG
  // counts them as 0 and always divides by the kernel width, as avg_pool1d with padding).
  scores_.assign(static_cast<size_t>(L), 0.0);
  const int64_t half = rule_.pool_kernel / 2;
  for (int64_t r = g.sinks; r < g.middle_end; ++r) {
    const int64_t lo = std::max(g.sinks, r - half), hi = std::min(g.middle_end - 1, r + half);
    if (rule_.pooling == KVC_POOLING_AVG) {
      double sum = 0.0;
      for (int64_t q = lo; q <= hi; ++q) sum += raw_[q];
      scores_[r] = sum / static_cast<double>(rule_.pool_kernel);
    } else {
      double best = raw_[lo];
      for (int64_t q = lo + 1; q <= hi; ++q) best = std::max(best, raw_[q]);
      scores_[r] = best;
    }
  }
}

int64_t RuleEngine::select_group(const kvc_cache_view& view, int32_t layer, int32_t head,
                                 const kvc_head_view& h, int64_t heavy, int32_t* out) {
  const Layout g = layout(h);
  // 1: protected (sinks, window, kept separators); 2: a heavy pick.
  keep_.assign(static_cast<size_t>(g.n), 0);
  std::fill(keep_.begin(), keep_.begin() + g.sinks, 1);
  std::fill(keep_.begin() + g.middle_end, keep_.end(), 1);
  candidates_.clear();
  for (int64_t r = g.sinks; r < g.middle_end; ++r) {
    if (kept_separator(h, g, r))
      keep_[r] = 1;
    else
      candidates_.push_back(r);
  }
  if (heavy > 0 && static_cast<int64_t>(candidates_.size()) <= heavy) {
    for (int64_t r : candidates_) keep_[r] = 2;
  } else if (heavy > 0) {
    score_group(view, layer, head, g);
    pool_.clear();
    for (int64_t r : candidates_)
      pool_.push_back({scores_[r], rule_.tie_signal ? ties_[r] : 0.0,
                       h.positions ? h.positions[r] : r, head, static_cast<int32_t>(r)});
    const auto end = selection::partition_best(pool_.begin(), pool_.end(),
                                               static_cast<size_t>(heavy), score_of_candidate,
                                               order_of(rule_));
    for (auto it = pool_.begin(); it != end; ++it) keep_[it->rank] = 2;
  }
  picked_.clear();
  int64_t n = 0;
  for (int64_t r = 0; r < g.n; ++r) {
    if (!keep_[r]) continue;
    out[n++] = static_cast<int32_t>(r);
    if (keep_[r] == 2) picked_.push_back(r);
  }
  return n;
}

void RuleEngine::select_layer_adaptive(const kvc_cache_view& view, int32_t layer,
                                       kvc_plan& plan, bool remember) {
  const int32_t H = view.n_heads;
  const int64_t budget = heavy_of_layer(layer);
  const auto floor = static_cast<int64_t>(std::floor(rule_.allocation_floor * budget + 1e-9));
  // Per head: protected spans, then its own best `floor` candidates; the rest compete in one
  // pool for the layer's other H * (budget - floor) slots. The pool does not grow when a head
  // has fewer than `floor` candidates, so no head ever keeps more than max_keep_per_head().
  head_keep_.resize(static_cast<size_t>(H));
  head_scores_.resize(static_cast<size_t>(H));
  pool_.clear();
  const int64_t pooled_slots = H * (budget - floor);
  for (int32_t h = 0; h < H; ++h) {
    const kvc_head_view& hv = view.heads[static_cast<int64_t>(layer) * H + h];
    const Layout g = layout(hv);
    std::vector<uint8_t>& keep = head_keep_[h];
    keep.assign(static_cast<size_t>(g.n), 0);
    std::fill(keep.begin(), keep.begin() + g.sinks, 1);
    std::fill(keep.begin() + g.middle_end, keep.end(), 1);
    own_.clear();
    bool scored = false;
    for (int64_t r = g.sinks; r < g.middle_end; ++r) {
      if (kept_separator(hv, g, r)) {
        keep[r] = 1;
        continue;
      }
      if (!scored) {
        score_group(view, layer, h, g);
        head_scores_[h] = scores_;
        scored = true;
      }
      own_.push_back({head_scores_[h][r], rule_.tie_signal ? ties_[r] : 0.0,
                      hv.positions ? hv.positions[r] : r, h, static_cast<int32_t>(r)});
    }
    const auto mine = selection::partition_best(own_.begin(), own_.end(),
                                                static_cast<size_t>(floor), score_of_candidate,
                                                order_of(rule_));
    for (auto it = own_.begin(); it != mine; ++it) keep[it->rank] = 1;
    pool_.insert(pool_.end(), mine, own_.end());
  }
  const auto end = selection::partition_best(
      pool_.begin(), pool_.end(), static_cast<size_t>(std::max<int64_t>(0, pooled_slots)),
      score_of_candidate, order_of(rule_));
  for (auto it = pool_.begin(); it != end; ++it) head_keep_[it->head][it->rank] = 1;

  for (int32_t h = 0; h < H; ++h) {
    const int64_t gi = static_cast<int64_t>(layer) * H + h;
    const kvc_head_view& hv = view.heads[gi];
    const Layout g = layout(hv);
    int32_t* out = plan.ranks + gi * plan.stride;
    GroupState& state = groups_[gi];
    if (remember) state.protected_positions.clear();
    int64_t n = 0;
    for (int64_t r = 0; r < g.n; ++r) {
      if (!head_keep_[h][r]) continue;
      out[n++] = static_cast<int32_t>(r);
      const bool heavy_pick = r >= g.sinks && r < g.middle_end && !kept_separator(hv, g, r);
      if (remember && heavy_pick) state.protected_positions.push_back(hv.positions[r]);
    }
    plan.counts[gi] = n;
    if (remember) state.size = n;
  }
}

int64_t RuleEngine::evict_fifo(GroupState& state, const kvc_head_view& h, int64_t k,
                               int32_t* out) {
  const Layout g = layout(h);
  std::vector<int64_t>& prot = state.protected_positions;  // ascending, as positions by rank
  victims_.clear();
  size_t p = 0;
  for (int64_t r = g.sinks; r < g.middle_end && static_cast<int64_t>(victims_.size()) < k; ++r) {
    if (kept_separator(h, g, r)) continue;
    const int64_t pos = h.positions[r];
    while (p < prot.size() && prot[p] < pos) ++p;
    if (p < prot.size() && prot[p] == pos) continue;
    victims_.push_back(r);
  }
  const size_t unprotected = victims_.size();
  for (int64_t r = g.sinks; r < g.middle_end && static_cast<int64_t>(victims_.size()) < k; ++r) {
    if (kept_separator(h, g, r)) continue;
    auto it = std::lower_bound(prot.begin(), prot.end(), h.positions[r]);
    if (it != prot.end() && *it == h.positions[r]) {
      victims_.push_back(r);
      prot.erase(it);
    }
  }
  std::inplace_merge(victims_.begin(), victims_.begin() + unprotected, victims_.end());
  for (size_t i = 0; i < victims_.size(); ++i) out[i] = static_cast<int32_t>(victims_[i]);
  return static_cast<int64_t>(victims_.size());
}

// A full selection writes KEEP lists (every group; identity where a group is within its
// size); a lazy step between refreshes writes EVICT lists (empty where nothing leaves), so
// that its plan and its application stay proportional to what leaves.
struct RuleEngine::Step {
  bool lazy, refresh;
  kvc_plan_kind kind;
};

RuleEngine::Step RuleEngine::step_kind(int64_t step, const kvc_cache_view& view) const {
  Step s;
  s.lazy = rule_.update_interval > 0;
  s.refresh = !s.lazy || step % rule_.update_interval == 0 || view.n_new > 1;
  s.kind = s.refresh ? KVC_PLAN_KEEP : KVC_PLAN_EVICT;
  if (s.lazy && view.n_layers * view.n_heads > 0 && view.heads[0].positions == nullptr)
    fail(KVC_ERR_INTERNAL, "a lazy rule needs the entries' positions in the cache view");
  return s;
}

// A group left as it is.
void RuleEngine::unchanged(const Step& s, const kvc_cache_view& view, int64_t gi,
                           kvc_plan& plan) const {
  const int64_t n = view.heads[gi].n_entries;
  if (s.kind == KVC_PLAN_KEEP) {
    int32_t* out = plan.ranks + gi * plan.stride;
    for (int64_t r = 0; r < n; ++r) out[r] = static_cast<int32_t>(r);
  }
  plan.counts[gi] = s.kind == KVC_PLAN_KEEP ? n : 0;
}

// One group over its size: a full selection (KEEP list), or lazy FIFO down to `target` (EVICT
// list). Returns whether anything leaves.
bool RuleEngine::reduce(const Step& s, const kvc_cache_view& view, int32_t layer, int32_t head,
                        int64_t gi, int64_t target, GroupState& state, kvc_plan& plan) {
  const kvc_head_view& h = view.heads[gi];
  int32_t* out = plan.ranks + gi * plan.stride;
  if (!s.refresh) {
    plan.counts[gi] = evict_fifo(state, h, h.n_entries - target, out);
    return plan.counts[gi] > 0;
  }
  plan.counts[gi] = select_group(view, layer, head, h, heavy_of_layer(layer), out);
  if (s.lazy) {
    state.protected_positions.clear();
    for (int64_t r : picked_) state.protected_positions.push_back(h.positions[r]);
  }
  return plan.counts[gi] < h.n_entries;
}

// The shared scope: one group, decided from the heads [0, n_heads_checked) (which must hold
// the same entries) and written as list 0 of a shared plan.
bool RuleEngine::reduce_shared(const Step& s, const kvc_cache_view& view,
                               int64_t n_heads_checked, kvc_plan& plan) {
  const int64_t n = view.heads[0].n_entries;
  for (int64_t g = 1; g < n_heads_checked; ++g)
    if (view.heads[g].n_entries != n)
      fail(KVC_ERR_INTERNAL,
           "a shared rule needs every (layer, head) to hold the same entries, but head " +
               std::to_string(g) + " holds " + std::to_string(view.heads[g].n_entries) +
               " and head 0 holds " + std::to_string(n));
  if (n <= trigger_size_) return false;
  groups_.resize(std::max<size_t>(groups_.size(), 1));
  if (!reduce(s, view, 0, 0, 0, keep_of_layer(0), groups_[0], plan)) return false;
  plan.kind = s.kind;
  plan.shared = 1;
  return true;
}

// The groups of one layer (per-head or per-layer scope). Returns whether anything leaves.
bool RuleEngine::reduce_layer(const Step& s, const kvc_cache_view& view, int32_t l,
                              kvc_plan& plan) {
  const int32_t H = view.n_heads;
  const int64_t first = static_cast<int64_t>(l) * H;
  groups_.resize(std::max<size_t>(groups_.size(), static_cast<size_t>(view.n_layers) * H));
  bool evicted = false;
  if (rule_.allocation == KVC_ALLOCATION_ADAPTIVE) {
    int64_t total = 0;
    for (int32_t h = 0; h < H; ++h) total += view.heads[first + h].n_entries;
    if (total <= H * keep_of_layer(l)) {
      for (int32_t h = 0; h < H; ++h) unchanged(s, view, first + h, plan);
    } else if (s.refresh) {
      select_layer_adaptive(view, l, plan, s.lazy);
      for (int32_t h = 0; h < H; ++h)
        evicted |= plan.counts[first + h] < view.heads[first + h].n_entries;
    } else {
      // Between refreshes each head returns to the size the last refresh gave it.
      for (int32_t h = 0; h < H; ++h) {
        GroupState& state = groups_[first + h];
        const int64_t target = state.size >= 0 ? state.size : keep_of_layer(l);
        if (view.heads[first + h].n_entries <= target)
          unchanged(s, view, first + h, plan);
        else
          evicted |= reduce(s, view, l, h, first + h, target, state, plan);
      }
    }
    return evicted;
  }
  const int64_t limit = group_limit(l);
  if (rule_.scope == KVC_SCOPE_PER_LAYER) {
    const int64_t n = view.heads[first].n_entries;
    for (int32_t h = 1; h < H; ++h)
      if (view.heads[first + h].n_entries != n)
        fail(KVC_ERR_INTERNAL, "a per-layer rule needs the heads of layer " + std::to_string(l) +
                                   " to hold the same entries");
    if (n <= limit) {
      for (int32_t h = 0; h < H; ++h) unchanged(s, view, first + h, plan);
      return false;
    }
    evicted = reduce(s, view, l, 0, first, keep_of_layer(l), groups_[first], plan);
    const int32_t* list = plan.ranks + first * plan.stride;
    for (int32_t h = 1; h < H; ++h) {
      std::copy(list, list + plan.counts[first], plan.ranks + (first + h) * plan.stride);
      plan.counts[first + h] = plan.counts[first];
    }
    return evicted;
  }
  for (int32_t h = 0; h < H; ++h) {
    if (view.heads[first + h].n_entries <= limit)
      unchanged(s, view, first + h, plan);
    else
      evicted |= reduce(s, view, l, h, first + h, keep_of_layer(l), groups_[first + h], plan);
  }
  return evicted;
}

void RuleEngine::decide(const kvc_cache_view& view, kvc_plan& plan) {
  plan.kind = KVC_PLAN_NOTHING;
  plan.shared = 0;
  if (static_cast<int64_t>(view.n_layers) * view.n_heads <= 0) return;
  const Step s = step_kind(steps_, view);
  if (rule_.scope == KVC_SCOPE_SHARED) {
    reduce_shared(s, view, static_cast<int64_t>(view.n_layers) * view.n_heads, plan);
    return;
  }
  bool evicted = false;
  for (int32_t l = 0; l < view.n_layers; ++l) evicted |= reduce_layer(s, view, l, plan);
  if (evicted) plan.kind = s.kind;
}

RuleEngine::Locality RuleEngine::locality() const {
  if (rule_.scope != KVC_SCOPE_SHARED) return Locality::PerLayer;
  const bool scored = rule_.heavy_size > 0;
  const bool layer_zero_only =
      !scored || (score_layers_.size() == 1 && score_layers_[0] == 0);
  return layer_zero_only ? Locality::LayerZero : Locality::WholeModel;
}

bool RuleEngine::over_layer(int32_t layer, const int64_t* counts) const {
  const int64_t* c = counts + static_cast<int64_t>(layer) * n_heads_;
  if (rule_.allocation == KVC_ALLOCATION_ADAPTIVE) {
    int64_t total = 0;
    for (int32_t h = 0; h < n_heads_; ++h) total += c[h];
    return total > n_heads_ * keep_of_layer(layer);
  }
  const int64_t limit =
      rule_.scope == KVC_SCOPE_SHARED ? trigger_size_ : group_limit(layer);
  for (int32_t h = 0; h < n_heads_; ++h)
    if (c[h] > limit) return true;
  return false;
}

bool RuleEngine::decide_layer(int32_t layer, int64_t step, const kvc_cache_view& view,
                              kvc_plan& plan) {
  plan.kind = KVC_PLAN_NOTHING;
  plan.shared = 0;
  const Step s = step_kind(step, view);
  if (rule_.scope == KVC_SCOPE_SHARED) {
    if (layer != 0 || locality() != Locality::LayerZero)
      fail(KVC_ERR_INTERNAL, "a shared rule decides layer by layer only from layer 0, when its "
                             "scores come from layer 0 alone");
    return reduce_shared(s, view, view.n_heads, plan);
  }
  const bool evicted = reduce_layer(s, view, layer, plan);
  if (evicted) plan.kind = s.kind;
  return evicted;
}

}  // namespace kvc
