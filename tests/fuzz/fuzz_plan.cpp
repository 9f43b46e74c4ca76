// Plugin plan validation: kvc::validate_plan on a fuzzed cache view and a fuzzed plan, checked
// against an independent statement of the rules in kvc/policy.h (differential: it must accept
// exactly the valid plans). A second mode runs the engine's rule executor (kvc::RuleEngine, with
// every kind of rule: lazy, orders, scopes, layer budgets, adaptive allocation, pooling) on the
// view and requires its plan to validate and to keep no more than the rule allows.
//
// The plan's kind is written as raw bytes, as a C plugin may write any int there.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fuzz_util.h"
#include "policy/policy.h"

namespace {

struct View {
  std::vector<std::vector<int64_t>> positions;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> acc, last, norms;
  std::vector<kvc_head_view> heads;
  kvc_cache_view view{};
  int64_t stride = 0;
};

void make_view(kvc::fuzz::Bytes& in, View& v) {
  const int32_t layers = static_cast<int32_t>(in.range(1, 3));
  const int32_t heads = static_cast<int32_t>(in.range(1, 4));
  const bool same = in.u8() & 1;  // every head holds the same entries (shared policies)
  const size_t n = static_cast<size_t>(layers) * heads;
  v.positions.resize(n);
  v.tokens.resize(n);
  v.acc.resize(n);
  v.last.resize(n);
  v.norms.resize(n);
  v.heads.resize(n);
  for (size_t g = 0; g < n; ++g) {
    if (same && g > 0) {
      v.positions[g] = v.positions[0];
      v.tokens[g] = v.tokens[0];
    } else {
      const int64_t L = in.range(0, 40);
      int64_t pos = in.range(0, 3);
      for (int64_t r = 0; r < L; ++r) {
        v.positions[g].push_back(pos);
        pos += 1 + (in.u8() & 3);  // evictions leave gaps
        v.tokens[g].push_back(in.u8() % 8);
      }
    }
    for (size_t r = 0; r < v.positions[g].size(); ++r) {
      v.acc[g].push_back(static_cast<float>(in.u8()) / 16.0f);
      v.last[g].push_back(static_cast<float>(in.u8() % 4) / 4.0f);
      v.norms[g].push_back(static_cast<float>(in.u8()));
    }
    // The engine passes real (non-null) arrays for requested signals, also for empty heads.
    for (auto* a : {&v.acc[g], &v.last[g], &v.norms[g]}) a->reserve(1);
    v.positions[g].reserve(1);
    v.tokens[g].reserve(1);
    kvc_head_view& h = v.heads[g];
    h.n_entries = static_cast<int64_t>(v.positions[g].size());
    h.positions = v.positions[g].data();
    h.token_ids = v.tokens[g].data();
    h.acc_attention = v.acc[g].data();
    h.last_attention = v.last[g].data();
    h.key_norms = v.norms[g].data();
    v.stride = std::max(v.stride, h.n_entries);
  }
  v.view.struct_size = sizeof v.view;
  v.view.n_layers = layers;
  v.view.n_heads = heads;
  v.view.n_tokens_seen = v.positions[0].empty() ? 0 : v.positions[0].back() + 1;
  v.view.n_new = 1;
  v.view.heads = v.heads.data();
}

int32_t kind_of(const kvc_plan& plan) {
  int32_t k;
  static_assert(sizeof(plan.kind) == sizeof k);
  std::memcpy(&k, &plan.kind, sizeof k);
  return k;
}

// kvc/policy.h's rules for a plan, written independently of validate_plan.
bool plan_is_valid(const kvc_plan& plan, const View& v, int64_t capacity) {
  const int32_t kind = kind_of(plan);
  if (kind != KVC_PLAN_NOTHING && kind != KVC_PLAN_KEEP && kind != KVC_PLAN_EVICT) return false;
  const size_t n = v.heads.size();
  if (kind != KVC_PLAN_NOTHING && plan.shared)
    for (size_t g = 1; g < n; ++g)
      if (v.positions[g] != v.positions[0]) return false;
  for (size_t g = 0; g < n; ++g) {
    const int64_t L = v.heads[g].n_entries;
    int64_t after = L;
    if (kind != KVC_PLAN_NOTHING) {
      const size_t list = plan.shared ? 0 : g;
      const int64_t count = plan.counts[list];
      const int64_t L_list = v.heads[list].n_entries;
      if (count < 0 || count > L_list || count > plan.stride) return false;
      const int32_t* r = plan.ranks + list * plan.stride;
      for (int64_t i = 0; i < count; ++i)
        if (r[i] < 0 || r[i] >= L_list || (i > 0 && r[i] <= r[i - 1])) return false;
      after = kind == KVC_PLAN_KEEP ? count : L - count;
    }
    if (capacity >= 0 && after > capacity) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvc::fuzz::Bytes in(data, size);
  const bool rule_mode = in.u8() & 1;
  View v;
  make_view(in, v);
  const size_t n = v.heads.size();
  std::vector<int32_t> ranks(n * static_cast<size_t>(std::max<int64_t>(v.stride, 1)), -7);
  std::vector<int64_t> counts(n, 0);
  kvc_plan plan{};
  plan.struct_size = sizeof plan;
  plan.kind = KVC_PLAN_NOTHING;
  plan.ranks = ranks.data();
  plan.stride = std::max<int64_t>(v.stride, 1);
  plan.counts = counts.data();

  if (!rule_mode) {
    const int32_t kind = static_cast<int32_t>(in.range(-1, 3));
    std::memcpy(&plan.kind, &kind, sizeof kind);
    plan.shared = in.u8() & 1;
    const int64_t capacity = in.range(-1, 42);
    for (auto& c : counts) c = in.range(-1, v.stride + 1);
    for (auto& r : ranks) r = static_cast<int32_t>(in.range(-1, v.stride));
    // Most lists from the fuzzer are unsorted; sort some so the later checks are reached.
    if (in.u8() & 1)
      for (size_t g = 0; g < n; ++g)
        std::sort(ranks.begin() + g * plan.stride, ranks.begin() + (g + 1) * plan.stride);
    const bool expected = plan_is_valid(plan, v, capacity);
    bool accepted = true;
    try {
      kvc::validate_plan(plan, v.view, capacity, "policy 'fuzz'");
    } catch (const kvc::Error& e) {
      kvc::fuzz::check_error(e);
      if (e.status() != KVC_ERR_POLICY) kvc::fuzz::broken("rejection is not KVC_ERR_POLICY");
      accepted = false;
    }
    if (accepted != expected)
      kvc::fuzz::broken(accepted ? "validate_plan accepted an invalid plan"
                                 : "validate_plan rejected a valid plan");
    return 0;
  }

  // Rule mode: the engine's own executor must always produce a valid plan.
  std::vector<int32_t> separators;
  for (int i = in.range(0, 3); i > 0; --i) separators.push_back(in.u8() % 8);
  std::vector<int32_t> score_layers;
  for (int i = in.range(0, 2); i > 0; --i)
    score_layers.push_back(static_cast<int32_t>(in.range(0, v.view.n_layers - 1)));
  std::vector<int64_t> layer_heavy;
  const bool per_layer_budgets = in.u8() & 1;
  for (int32_t l = 0; per_layer_budgets && l < v.view.n_layers; ++l)
    layer_heavy.push_back(in.range(0, 12));
  kvc_rule rule{};
  rule.struct_size = sizeof rule;
  rule.sink_size = in.range(0, 12);
  rule.recent_size = in.range(0, 12);
  rule.separator_size = in.range(0, 6);
  rule.separator_ids = separators.data();
  rule.n_separator_ids = separators.size();
  rule.heavy_size = in.range(0, 12);
  const uint32_t signals[] = {KVC_SIGNAL_ACC_ATTENTION, KVC_SIGNAL_LAST_ATTENTION,
                              KVC_SIGNAL_KEY_NORM};
  rule.heavy_signal = signals[in.u8() % 3];
  rule.heavy_order = in.u8() & 1 ? KVC_ORDER_SMALLEST : KVC_ORDER_LARGEST;
  rule.tie_signal = in.u8() & 1 ? signals[in.u8() % 3] : 0;
  rule.pooling = static_cast<kvc_pooling>(in.range(0, 2));
  rule.pool_kernel = 2 * in.range(0, 3) + 1;
  rule.update_interval = in.range(0, 3);
  bool same = true;
  for (size_t g = 1; g < n; ++g) same &= v.positions[g] == v.positions[0];
  const int64_t scope = in.range(0, 2);
  rule.scope = same && scope == 1   ? KVC_SCOPE_SHARED
               : same && scope == 2 ? KVC_SCOPE_PER_LAYER
                                    : KVC_SCOPE_PER_HEAD;
  if (rule.scope != KVC_SCOPE_SHARED && per_layer_budgets) {
    rule.layer_heavy_sizes = layer_heavy.data();
    rule.n_layer_heavy_sizes = layer_heavy.size();
  }
  if (rule.scope == KVC_SCOPE_PER_HEAD && (in.u8() & 1)) {
    rule.allocation = KVC_ALLOCATION_ADAPTIVE;
    rule.allocation_floor = static_cast<double>(in.range(0, 4)) / 4.0;
  }
  rule.score_layers = score_layers.empty() ? nullptr : score_layers.data();
  rule.n_score_layers = score_layers.size();
  const int64_t trigger = in.range(-1, 20);
  const int64_t steps = in.range(1, 4);
  v.view.n_new = in.range(1, 2);
  kvc::RuleEngine engine(rule, trigger, v.view.n_layers, v.view.n_heads);
  try {
    engine.validate(KVC_SIGNAL_ACC_ATTENTION | KVC_SIGNAL_LAST_ATTENTION | KVC_SIGNAL_KEY_NORM,
                    "rule: ");
    for (int64_t i = 0; i < steps; ++i) engine.count_step();
    engine.decide(v.view, plan);
  } catch (const kvc::Error& e) {
    kvc::fuzz::broken(std::string("the rule engine threw on a well-formed view: ") + e.what());
  }
  const int64_t most = engine.max_keep_per_head();
  if (!plan_is_valid(plan, v, -1)) kvc::fuzz::broken("the rule engine produced an invalid plan");
  try {
    kvc::validate_plan(plan, v.view, -1, "rule");
  } catch (const kvc::Error& e) {
    kvc::fuzz::broken(std::string("validate_plan rejected the rule engine's plan: ") + e.what());
  }
  const int32_t kind = kind_of(plan);
  // A full selection writes KEEP lists; only a lazy step between refreshes writes EVICT lists.
  const bool between_refreshes =
      rule.update_interval > 0 && steps % rule.update_interval != 0 && v.view.n_new == 1;
  if (kind == KVC_PLAN_EVICT && !between_refreshes)
    kvc::fuzz::broken("a rule wrote EVICT on a step that refreshes");
  if (kind == KVC_PLAN_KEEP || kind == KVC_PLAN_EVICT)
    for (size_t g = 0; g < n; ++g) {
      const int64_t listed = counts[plan.shared ? 0 : g];
      const int64_t kept = kind == KVC_PLAN_KEEP ? listed : v.heads[g].n_entries - listed;
      if (kept < v.heads[g].n_entries && kept > most) kvc::fuzz::broken("rule kept too many");
    }
  return 0;
}
