// The declarative rule (kvc/policy.h) run by the host, and validation of every plan.
#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "policy/policy.h"

namespace kvc {

namespace {

const float* signal_of(const kvc_head_view& h, uint32_t flag) {
  switch (flag) {
    case KVC_SIGNAL_ACC_ATTENTION: return h.acc_attention;
    case KVC_SIGNAL_LAST_ATTENTION: return h.last_attention;
    case KVC_SIGNAL_KEY_NORM: return h.key_norms;
  }
  return nullptr;
}

const char* signal_name(uint32_t flag) {
  switch (flag) {
    case KVC_SIGNAL_ACC_ATTENTION: return "ACC_ATTENTION";
    case KVC_SIGNAL_LAST_ATTENTION: return "LAST_ATTENTION";
    case KVC_SIGNAL_KEY_NORM: return "KEY_NORM";
  }
  return "unknown signal";
}

// One group's selection. `score(rank)` is only called for heavy-hitter candidates. Writes the
// kept ranks in age order to `out` and returns their count.
template <class Score>
int64_t select(const kvc_rule& rule, int64_t L, const int32_t* tokens,
               const std::vector<int32_t>& seps, Score score, std::vector<uint8_t>& keep,
               std::vector<int64_t>& cand, int32_t* out) {
  const int64_t a = std::min<int64_t>(rule.sink_size, L);
  const int64_t w = std::min<int64_t>(rule.recent_size, L - a);
  const int64_t mid_end = L - w;
  keep.assign(static_cast<size_t>(L), 0);
  std::fill(keep.begin(), keep.begin() + a, 1);
  std::fill(keep.begin() + mid_end, keep.end(), 1);
  // Most recent separators of the middle: scan backwards until enough are found.
  if (rule.separator_size > 0 && !seps.empty() && tokens != nullptr) {
    int64_t found = 0;
    for (int64_t r = mid_end - 1; r >= a && found < rule.separator_size; --r) {
      if (std::binary_search(seps.begin(), seps.end(), tokens[r])) {
        keep[r] = 1;
        ++found;
      }
    }
  }
  if (rule.heavy_size > 0) {
    cand.clear();
    for (int64_t r = a; r < mid_end; ++r)
      if (!keep[r]) cand.push_back(r);
    if (static_cast<int64_t>(cand.size()) > rule.heavy_size) {
      // Largest score first; equal scores: the older (smaller rank) entry first.
      auto better = [&](int64_t x, int64_t y) {
        const double sx = score(x), sy = score(y);
        return sx > sy || (sx == sy && x < y);
      };
      std::nth_element(cand.begin(), cand.begin() + rule.heavy_size, cand.end(), better);
      cand.resize(static_cast<size_t>(rule.heavy_size));
    }
    for (int64_t r : cand) keep[r] = 1;
  }
  int64_t n = 0;
  for (int64_t r = 0; r < L; ++r)
    if (keep[r]) out[n++] = static_cast<int32_t>(r);
  return n;
}

}  // namespace

void execute_rule(const kvc_rule& rule, const kvc_cache_view& view, kvc_plan& plan,
                  int64_t skip_at_or_below) {
  const int64_t n_groups = static_cast<int64_t>(view.n_layers) * view.n_heads;
  if (n_groups <= 0) return;
  std::vector<int32_t> seps;
  if (rule.separator_size > 0 && rule.separator_ids != nullptr) {
    seps.assign(rule.separator_ids, rule.separator_ids + rule.n_separator_ids);
    std::sort(seps.begin(), seps.end());
  }
  std::vector<uint8_t> keep;
  std::vector<int64_t> cand;
  const bool heavy = rule.heavy_size > 0;

  if (rule.scope == KVC_SCOPE_SHARED) {
    const int64_t L = view.heads[0].n_entries;
    for (int64_t g = 1; g < n_groups; ++g)
      if (view.heads[g].n_entries != L)
        fail(KVC_ERR_INTERNAL,
             "a shared rule needs every (layer, head) to hold the same entries, but head " +
                  std::to_string(g) + " holds " + std::to_string(view.heads[g].n_entries) +
                  " and head 0 holds " + std::to_string(L));
    if (L <= skip_at_or_below) return;
    // Shared score: the signal summed over the score layers (all when none are listed) and
    // every head, in double so the order of the sum does not matter at fp32 resolution.
    std::vector<double> total;
    if (heavy) {
      std::vector<int32_t> layers;
      if (rule.score_layers != nullptr && rule.n_score_layers > 0)
        layers.assign(rule.score_layers, rule.score_layers + rule.n_score_layers);
      else
        for (int32_t l = 0; l < view.n_layers; ++l) layers.push_back(l);
      total.assign(static_cast<size_t>(L), 0.0);
      for (int32_t l : layers) {
        if (l < 0 || l >= view.n_layers)
          fail(KVC_ERR_INTERNAL, "score layer " + std::to_string(l) + " is outside the model's " +
                    std::to_string(view.n_layers) + " layers");
        for (int32_t h = 0; h < view.n_heads; ++h) {
          const float* s = signal_of(view.heads[l * view.n_heads + h], rule.heavy_signal);
          if (s == nullptr)
            fail(KVC_ERR_INTERNAL, std::string("the rule needs the signal ") +
                                       signal_name(rule.heavy_signal) +
                      " but the cache view does not carry it");
          for (int64_t r = 0; r < L; ++r) total[r] += s[r];
        }
      }
    }
    const int64_t n = select(
        rule, L, view.heads[0].token_ids, seps, [&](int64_t r) { return total[r]; }, keep, cand,
        plan.ranks);
    if (n == L) return;
    plan.kind = KVC_PLAN_KEEP;
    plan.shared = 1;
    for (int64_t g = 0; g < n_groups; ++g) plan.counts[g] = n;
    return;
  }

  bool evicted = false;
  for (int64_t g = 0; g < n_groups; ++g) {
    const kvc_head_view& h = view.heads[g];
    int32_t* out = plan.ranks + g * plan.stride;
    const int64_t L = h.n_entries;
    if (L <= skip_at_or_below) {
      for (int64_t r = 0; r < L; ++r) out[r] = static_cast<int32_t>(r);
      plan.counts[g] = L;
      continue;
    }
    const float* s = heavy ? signal_of(h, rule.heavy_signal) : nullptr;
    if (heavy && s == nullptr)
      fail(KVC_ERR_INTERNAL, std::string("the rule needs the signal ") +
                                 signal_name(rule.heavy_signal) +
                " but the cache view does not carry it");
    const int64_t n = select(
        rule, L, h.token_ids, seps, [&](int64_t r) { return static_cast<double>(s[r]); }, keep,
        cand, out);
    plan.counts[g] = n;
    evicted |= n < L;
  }
  if (evicted) {
    plan.kind = KVC_PLAN_KEEP;
    plan.shared = 0;
  }
}

void validate_plan(const kvc_plan& plan, const kvc_cache_view& view, int64_t capacity,
                   const std::string& label) {
  // Runs after every decision, so the happy path does no allocation: messages are built only
  // once a check has failed.
  const int64_t n_groups = static_cast<int64_t>(view.n_layers) * view.n_heads;
  auto bad = [&](const std::string& what) {
    fail(KVC_ERR_POLICY, label + " returned an invalid plan: " + what);
  };
  auto where = [&](int64_t g) {
    return "(layer " + std::to_string(g / view.n_heads) + ", head " +
           std::to_string(g % view.n_heads) + ")";
  };
  // A C plugin may store any int in the enum; loading an out-of-range enum is UB in C++.
  int32_t kind = 0;
  static_assert(sizeof plan.kind == sizeof kind);
  std::memcpy(&kind, &plan.kind, sizeof kind);
  if (kind != KVC_PLAN_NOTHING && kind != KVC_PLAN_KEEP && kind != KVC_PLAN_EVICT)
    bad("unknown plan kind " + std::to_string(kind) +
        " (expected KVC_PLAN_NOTHING, KVC_PLAN_KEEP or KVC_PLAN_EVICT)");
  if (plan.kind != KVC_PLAN_NOTHING && plan.shared) {
    const kvc_head_view& h0 = view.heads[0];
    for (int64_t g = 1; g < n_groups; ++g) {
      const kvc_head_view& h = view.heads[g];
      const bool same =
          h.n_entries == h0.n_entries &&
          (h.positions == nullptr || h0.positions == nullptr ||
           std::memcmp(h.positions, h0.positions, sizeof(int64_t) * h0.n_entries) == 0);
      if (!same)
        bad("a shared plan, but " + where(g) +
            " does not hold the same entries as (layer 0, head 0)");
    }
  }
  const int64_t n_lists = plan.kind == KVC_PLAN_NOTHING ? 0 : (plan.shared ? 1 : n_groups);
  for (int64_t g = 0; g < n_lists; ++g) {
    const int64_t L = view.heads[g].n_entries;
    const int64_t n = plan.counts[g];
    auto at = [&] { return where(g) + " with " + std::to_string(L) + " entries"; };
    if (n < 0 || n > L || n > plan.stride)
      bad("list " + at() + " has " + std::to_string(n) + " ranks");
    const int32_t* r = plan.ranks + g * plan.stride;
    for (int64_t i = 0; i < n; ++i) {
      if (r[i] < 0 || r[i] >= L)
        bad("rank " + std::to_string(r[i]) + " is out of range for " + at() + " (allowed 0.." +
            std::to_string(L - 1) + ")");
      if (i > 0 && r[i] <= r[i - 1])
        bad("ranks of " + at() + " are not strictly increasing (" + std::to_string(r[i - 1]) +
            " then " + std::to_string(r[i]) + "; duplicates and unsorted lists are rejected)");
    }
  }
  if (capacity < 0) return;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t L = view.heads[g].n_entries;
    const int64_t listed = plan.kind == KVC_PLAN_NOTHING ? 0 : plan.counts[plan.shared ? 0 : g];
    const int64_t after = plan.kind == KVC_PLAN_KEEP    ? listed
                          : plan.kind == KVC_PLAN_EVICT ? L - listed
                                                        : L;
    if (after > capacity)
      bad(where(g) + " would hold " + std::to_string(after) +
          " entries after the plan, over the policy's capacity " + std::to_string(capacity));
  }
}

}  // namespace kvc
