// Validation of every plan a policy callback returns, before the engine applies it.
#include <cstring>

#include "common/error.h"
#include "policy/policy.h"

namespace kvc {

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
