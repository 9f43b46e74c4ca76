// The device's rule (core/cuda/rule_math.h, the code the CUDA kernels run) against the
// engine's RuleEngine and kvc/selection.hpp, on the host: the same plans, list for list, over
// random rules (every scope, pooling, ties, separators, per-layer budgets, lazy refresh,
// adaptive allocation) and random histories of prefills and decode steps whose scores have
// many ties and NaNs. The simulated cache keeps signals and the lazy protection by slot, as
// the device does, and ranks move as the host's KvCache moves them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <kvc/selection.hpp>

#include "common/error.h"
#include "cuda_options.h"
#include "device_rule.h"
#include "policy/policy.h"
#include "policy/rule_engine.h"
#include "rule_math.h"

namespace kvc::cuda {
namespace {

namespace rm = rule_math;

constexpr uint32_t kSignals[] = {KVC_SIGNAL_ACC_ATTENTION,    KVC_SIGNAL_LAST_ATTENTION,
                                 KVC_SIGNAL_KEY_NORM,         KVC_SIGNAL_WINDOW_ATTENTION,
                                 KVC_SIGNAL_KEY_MEAN_COSINE,  KVC_SIGNAL_PIVOTAL_COUNT};
int signal_index(uint32_t flag) {
  for (int i = 0; i < 6; ++i)
    if (kSignals[i] == flag) return i;
  return -1;
}

// A cache as the device holds it: per (layer, head) rank -> slot, position and token, and the
// signals and lazy protection by slot.
struct SimCache {
  int32_t n_layers, n_heads;
  struct Head {
    std::vector<int32_t> slots, tokens;
    std::vector<int64_t> positions;
    std::vector<int32_t> free_slots;
    int32_t n_slots = 0;
  };
  std::vector<Head> heads;
  std::vector<std::vector<float>> signals[6];   // [signal][head][slot]
  std::vector<std::vector<uint8_t>> protect;    // [head][slot]
  std::vector<int64_t> size_state;

  SimCache(int32_t L, int32_t H)
      : n_layers(L), n_heads(H), heads(static_cast<size_t>(L) * H),
        protect(heads.size()), size_state(heads.size(), -1) {
    for (auto& s : signals) s.resize(heads.size());
  }
  int64_t max_entries() const {
    int64_t m = 0;
    for (const Head& h : heads) m = std::max<int64_t>(m, h.slots.size());
    return m;
  }
  void append(int64_t position, int32_t token) {
    for (size_t i = 0; i < heads.size(); ++i) {
      Head& h = heads[i];
      int32_t slot;
      if (!h.free_slots.empty()) {
        slot = h.free_slots.back();
        h.free_slots.pop_back();
      } else {
        slot = h.n_slots++;
        for (auto& s : signals) s[i].resize(h.n_slots, 0.0f);
        protect[i].resize(h.n_slots, 0);
      }
      protect[i][slot] = 0;  // append_kv clears the slot's protection
      h.slots.push_back(slot);
      h.positions.push_back(position);
      h.tokens.push_back(token);
    }
  }
  void apply(const kvc_plan& p) {
    if (p.kind == KVC_PLAN_NOTHING) return;
    for (size_t i = 0; i < heads.size(); ++i) {
      Head& h = heads[i];
      const size_t list = p.shared ? 0 : i;
      const int32_t* ranks = p.ranks + list * p.stride;
      const int64_t count = p.counts[list];
      std::vector<uint8_t> keep(h.slots.size(), p.kind == KVC_PLAN_EVICT);
      for (int64_t j = 0; j < count; ++j) keep[ranks[j]] = p.kind == KVC_PLAN_KEEP;
      Head next;
      next.free_slots = h.free_slots;
      next.n_slots = h.n_slots;
      for (size_t r = 0; r < h.slots.size(); ++r) {
        if (keep[r]) {
          next.slots.push_back(h.slots[r]);
          next.positions.push_back(h.positions[r]);
          next.tokens.push_back(h.tokens[r]);
        } else {
          next.free_slots.push_back(h.slots[r]);
        }
      }
      h = std::move(next);
    }
  }
};

// rule_math's view of SimCache (the device's DeviceAccess reads the same through its tables).
struct SimAccess {
  SimCache* c;
  int heavy_signal, tie_signal;
  bool tokens = true;
  int64_t n(int64_t gi) const { return static_cast<int64_t>(c->heads[gi].slots.size()); }
  bool has_tokens() const { return tokens; }
  int32_t token(int64_t gi, int64_t r) const { return c->heads[gi].tokens[r]; }
  int64_t position(int64_t gi, int64_t r) const { return c->heads[gi].positions[r]; }
  int32_t slot(int64_t gi, int64_t r) const { return c->heads[gi].slots[r]; }
  float heavy(int64_t gi, int64_t r) const { return c->signals[heavy_signal][gi][slot(gi, r)]; }
  float tie(int64_t gi, int64_t r) const { return c->signals[tie_signal][gi][slot(gi, r)]; }
  bool is_protected(int64_t gi, int64_t r) const { return c->protect[gi][slot(gi, r)] != 0; }
  void set_protected(int64_t gi, int64_t r, bool v) const { c->protect[gi][slot(gi, r)] = v; }
  int64_t size_state(int64_t gi) const { return c->size_state[gi]; }
  void set_size_state(int64_t gi, int64_t v) const { c->size_state[gi] = v; }
};

// The host engine's view of SimCache: signals gathered into rank order.
struct SimView {
  std::vector<kvc_head_view> heads;
  std::vector<std::vector<float>> by_rank[6];
  std::vector<const float*> window, cosine, pivotal;
  kvc_cache_view view{};
  void build(const SimCache& c, int64_t seen, int64_t n_new, bool tokens) {
    const size_t G = c.heads.size();
    heads.assign(G, {});
    for (int s = 0; s < 6; ++s) {
      by_rank[s].assign(G, {});
      for (size_t i = 0; i < G; ++i)
        for (int32_t slot : c.heads[i].slots) by_rank[s][i].push_back(c.signals[s][i][slot]);
    }
    window.assign(G, nullptr);
    cosine.assign(G, nullptr);
    pivotal.assign(G, nullptr);
    for (size_t i = 0; i < G; ++i) {
      kvc_head_view& h = heads[i];
      h.n_entries = static_cast<int64_t>(c.heads[i].slots.size());
      h.positions = c.heads[i].positions.data();
      h.token_ids = tokens ? c.heads[i].tokens.data() : nullptr;
      h.acc_attention = by_rank[0][i].data();
      h.last_attention = by_rank[1][i].data();
      h.key_norms = by_rank[2][i].data();
      window[i] = by_rank[3][i].data();
      cosine[i] = by_rank[4][i].data();
      pivotal[i] = by_rank[5][i].data();
    }
    view = {};
    view.struct_size = sizeof view;
    view.n_layers = c.n_layers;
    view.n_heads = c.n_heads;
    view.n_tokens_seen = seen;
    view.n_new = n_new;
    view.heads = heads.data();
    view.window_attention = window.data();
    view.key_mean_cosine = cosine.data();
    view.pivotal_count = pivotal.data();
  }
};

struct Plan {
  std::vector<int32_t> ranks;
  std::vector<int64_t> counts;
  kvc_plan plan{};
  Plan(size_t groups, int64_t stride) : ranks(groups * stride, -7), counts(groups, -7) {
    plan.struct_size = sizeof plan;
    plan.ranks = ranks.data();
    plan.counts = counts.data();
    plan.stride = stride;
  }
  std::vector<int32_t> list(size_t i) const {
    return {ranks.begin() + static_cast<int64_t>(i) * plan.stride,
            ranks.begin() + static_cast<int64_t>(i) * plan.stride + counts[i]};
  }
};

// Scores with many exact ties, signed zeros and NaNs.
float random_score(std::mt19937& rng, double nan_rate) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (u(rng) < nan_rate) return std::numeric_limits<float>::quiet_NaN();
  static const float kLevels[] = {0.0f, -0.0f, 0.25f, 0.5f, 1.0f, 3.0f, -1.0f};
  if (u(rng) < 0.6) return kLevels[rng() % 7];
  return static_cast<float>(u(rng) * 4.0 - 1.0);
}

struct Config {
  kvc_rule rule{};
  std::vector<int32_t> separators, score_layers;
  std::vector<int64_t> layer_heavy;
  int32_t L = 1, H = 1;
  int64_t trigger = 0;
  std::string text;
};

Config random_config(std::mt19937& rng) {
  Config c;
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  c.L = 1 + pick(3);
  c.H = 1 + pick(4);
  kvc_rule& r = c.rule;
  r.struct_size = sizeof r;
  r.sink_size = pick(4);
  r.recent_size = pick(7);
  r.heavy_size = pick(9);
  r.scope = static_cast<kvc_scope>(pick(3));
  r.heavy_signal = kSignals[pick(6)];
  r.tie_signal = pick(2) ? kSignals[pick(6)] : 0;
  r.heavy_order = pick(2) ? KVC_ORDER_SMALLEST : KVC_ORDER_LARGEST;
  r.signal_window = 4;
  r.pooling = static_cast<kvc_pooling>(pick(3));
  r.pool_kernel = r.pooling == KVC_POOLING_NONE ? 0 : 1 + 2 * pick(3);
  if (pick(3) == 0) {
    r.separator_size = 1 + pick(3);
    c.separators = {5, 3, 3, 9, 1};  // unsorted, with a duplicate
    r.separator_ids = c.separators.data();
    r.n_separator_ids = c.separators.size();
  }
  if (r.scope == KVC_SCOPE_SHARED && pick(2)) {
    c.score_layers = {static_cast<int32_t>(pick(c.L))};
    if (c.L > 1 && pick(2)) c.score_layers.push_back((c.score_layers[0] + 1) % c.L);
    r.score_layers = c.score_layers.data();
    r.n_score_layers = c.score_layers.size();
  }
  if (r.scope != KVC_SCOPE_SHARED && pick(3) == 0) {
    for (int l = 0; l < c.L; ++l) c.layer_heavy.push_back(pick(8));
    r.layer_heavy_sizes = c.layer_heavy.data();
    r.n_layer_heavy_sizes = c.layer_heavy.size();
  }
  r.update_interval = pick(2) ? 0 : 1 + pick(4);
  if (r.scope == KVC_SCOPE_PER_HEAD && pick(2)) {
    r.allocation = KVC_ALLOCATION_ADAPTIVE;
    static const double kFloors[] = {0.0, 0.2, 0.5, 1.0, 0.33};
    r.allocation_floor = kFloors[pick(5)];
  }
  c.trigger = r.sink_size + r.recent_size + r.separator_size + r.heavy_size + pick(2);
  std::ostringstream t;
  t << "L" << c.L << " H" << c.H << " scope " << r.scope << " sink " << r.sink_size
    << " recent " << r.recent_size << " heavy " << r.heavy_size << " sep " << r.separator_size
    << " signal " << r.heavy_signal << " tie " << r.tie_signal << " order " << r.heavy_order
    << " pooling " << r.pooling << "/" << r.pool_kernel << " layer_heavy "
    << c.layer_heavy.size() << " interval " << r.update_interval << " adaptive "
    << r.allocation << "/" << r.allocation_floor << " trigger " << c.trigger;
  c.text = t.str();
  return c;
}

// Runs one random history (random tokens, signals and prefill lengths from `rng`) through
// RuleEngine and rule_math side by side for the rule `cfg`; returns the number of decisions
// compared.
int compare_history(const Config& cfg, std::mt19937& rng, double nan_rate, bool tokens) {
  RuleEngine engine(cfg.rule, cfg.trigger, cfg.L, cfg.H);
  RuleData data = make_rule_data(cfg.rule, cfg.trigger, cfg.L, cfg.H);
  SimCache cache(cfg.L, cfg.H);
  SimAccess access{&cache, signal_index(cfg.rule.heavy_signal),
                   cfg.rule.tie_signal ? signal_index(cfg.rule.tie_signal) : 0, tokens};
  const size_t G = static_cast<size_t>(cfg.L) * cfg.H;
  SequentialTeam team;
  HostScratch scratch;
  int64_t seen = 0;
  int compared = 0;
  const int steps = 25 + static_cast<int>(rng() % 30);
  for (int step = 0; step < steps; ++step) {
    // A prefill now and then (a multi-token step), else one token.
    const int64_t n_new = step == 0 || rng() % 9 == 0 ? 1 + rng() % 24 : 1;
    for (int64_t t = 0; t < n_new; ++t) cache.append(seen + t, static_cast<int32_t>(rng() % 12));
    seen += n_new;
    for (auto& per_signal : cache.signals)
      for (auto& per_head : per_signal)
        for (float& v : per_head) v = random_score(rng, nan_rate);
    engine.count_step();
    std::vector<int64_t> counts(G);
    for (size_t i = 0; i < G; ++i) counts[i] = static_cast<int64_t>(cache.heads[i].slots.size());
    bool device_over = false;
    for (int32_t l = 0; l < cfg.L; ++l)
      device_over |= rm::over_layer(data.rule, l, [&](int64_t gi) { return counts[gi]; });
    EXPECT_EQ(engine.over(counts.data()), device_over) << "step " << step;
    if (!engine.over(counts.data())) continue;

    SimView view;
    view.build(cache, seen, n_new, tokens);
    const int64_t stride = std::max<int64_t>(cache.max_entries(), 1);
    Plan host(G, stride), device(G, stride);
    engine.decide(view.view, host.plan);

    scratch.size_for(static_cast<int64_t>(G), cfg.L, cfg.H, stride);
    const rm::PlanOut out{device.ranks.data(), device.counts.data(), stride};
    const rm::Decision d =
        rm::decide(team, data.rule, access, engine.steps(), n_new, scratch.view, out);
    ++compared;
    EXPECT_EQ(host.plan.kind, d.kind) << "step " << step;
    EXPECT_EQ(host.plan.shared, d.shared) << "step " << step;
    if (host.plan.kind != d.kind || host.plan.shared != d.shared) return compared;
    if (host.plan.kind != KVC_PLAN_NOTHING) {
      const size_t lists = host.plan.shared ? 1 : G;
      for (size_t i = 0; i < lists; ++i) {
        EXPECT_EQ(host.list(i), device.list(i)) << "step " << step << " list " << i;
        if (host.list(i) != device.list(i)) return compared;
      }
    }
    cache.apply(host.plan);
  }
  return compared;
}

int run_history(uint32_t seed, double nan_rate, bool tokens) {
  std::mt19937 rng(seed);
  Config cfg = random_config(rng);
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + cfg.text);
  return compare_history(cfg, rng, nan_rate, tokens);
}

TEST(DeviceRule, PlansEqualRuleEngineOnRandomHistories) {
  int decisions = 0;
  for (uint32_t seed = 1; seed <= 600; ++seed) {
    decisions += run_history(seed, seed % 3 == 0 ? 0.15 : 0.0, seed % 5 != 0);
    if (HasFailure()) break;
  }
  EXPECT_GT(decisions, 5000);
}

// The rules the installed policy plugins set (each method family: h2o per head, shared and
// adaptive, lazy_h2o, tova, snapkv's pooled window attention, pyramidkv's per-layer budgets
// with adaptive allocation, knorm, keydiff's key cosine, scissorhands' pivotal counts and lazy
// refresh, streaming, sepllm and unified with separators), through PolicyInstance as the
// engine creates them, each over random histories: the device's plans equal RuleEngine's.
TEST(DeviceRule, PlansEqualRuleEngineForEveryInstalledMethod) {
  struct Case {
    const char* policy;
    std::vector<kvc_param> params;
  };
  const std::vector<Case> cases = {
      {"h2o", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}}},
      {"h2o", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"},
               {"scope", "shared"}}},
      {"h2o", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"},
               {"allocation", "adaptive"}}},
      {"lazy_h2o", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"},
                    {"update_interval", "3"}}},
      {"tova", {{"budget", "12"}, {"start_size", "2"}}},
      {"snapkv", {{"window", "4"}, {"kernel_size", "3"}, {"start_size", "2"},
                  {"heavy_size", "4"}}},
      {"pyramidkv", {{"window", "4"}, {"start_size", "2"}, {"heavy_size", "4"}, {"beta", "2"},
                     {"allocation", "adaptive"}}},
      {"pyramidkv", {{"window", "4"}, {"start_size", "2"}, {"heavy_size", "6"}, {"beta", "2"}}},
      {"knorm", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}}},
      {"keydiff", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}}},
      {"scissorhands", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"},
                        {"history", "5"}}},
      {"streaming", {{"start_size", "2"}, {"recent_size", "10"}}},
      {"sepllm", {{"start_size", "2"}, {"separator_size", "4"}, {"local_size", "8"},
                  {"cache_size", "20"}, {"separators", "1,3,5"}}},
      {"unified", {{"start_size", "2"}, {"separator_size", "4"}, {"heavy_size", "4"},
                   {"local_size", "8"}, {"separators", "1,3,5"}}},
  };
  for (const Case& c : cases) {
    std::string label = c.policy;
    for (const kvc_param& p : c.params) label += std::string(" ") + p.name + "=" + p.value;
    SCOPED_TRACE(label);
    kvc_policy_host host{};
    host.struct_size = sizeof host;
    host.n_layers = 3;
    host.n_heads = 4;
    host.vocab_size = 50304;
    host.max_position_embeddings = 2048;
    std::unique_ptr<PolicyInstance> inst;
    try {
      inst = std::make_unique<PolicyInstance>(load_policy(c.policy, KVC_BUILD_POLICY_DIR), host,
                                              c.params.data(), c.params.size());
    } catch (const Error& e) {
      FAIL() << e.what();
    }
    const kvc_policy_setup& setup = inst->setup();
    ASSERT_TRUE(setup.use_rule) << "not a rule policy";
    Config cfg;
    cfg.rule = setup.rule;
    cfg.L = host.n_layers;
    cfg.H = host.n_heads;
    cfg.trigger = setup.trigger == KVC_TRIGGER_OVER_CAPACITY ? setup.trigger_size : 0;
    int decisions = 0;
    for (uint32_t seed = 1; seed <= 40 && !HasFailure(); ++seed) {
      std::mt19937 rng(seed * 7919u);
      SCOPED_TRACE("seed " + std::to_string(seed));
      decisions += compare_history(cfg, rng, seed % 4 == 0 ? 0.1 : 0.0, true);
    }
    if (HasFailure()) return;
    EXPECT_GT(decisions, 200);
  }
}

// Scope coverage: each scope, lazy and adaptive, is reached by the random configurations.
TEST(DeviceRule, RandomConfigurationsCoverEveryFeature) {
  int per_scope[3] = {}, lazy = 0, adaptive = 0, pooled = 0, separators = 0, layer_heavy = 0;
  for (uint32_t seed = 1; seed <= 600; ++seed) {
    std::mt19937 rng(seed);
    const Config c = random_config(rng);
    ++per_scope[c.rule.scope];
    lazy += c.rule.update_interval > 0;
    adaptive += c.rule.allocation == KVC_ALLOCATION_ADAPTIVE;
    pooled += c.rule.pooling != KVC_POOLING_NONE;
    separators += c.rule.separator_size > 0;
    layer_heavy += c.rule.layer_heavy_sizes != nullptr;
  }
  for (int s : per_scope) EXPECT_GT(s, 100);
  EXPECT_GT(lazy, 200);
  EXPECT_GT(adaptive, 50);
  EXPECT_GT(pooled, 200);
  EXPECT_GT(separators, 100);
  EXPECT_GT(layer_heavy, 50);
}

// The order itself against kvc/selection.hpp, including NaNs and signed zeros.
TEST(DeviceRule, OrderEqualsSelectionHpp) {
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const double a = random_score(rng, 0.2), b = random_score(rng, 0.2);
    for (auto order : {selection::Order::Largest, selection::Order::Smallest}) {
      const bool smallest = order == selection::Order::Smallest;
      ASSERT_EQ(selection::score_before(a, b, order), rm::score_before(a, b, smallest))
          << a << " " << b;
      const int64_t pa = rng() % 4, pb = rng() % 4;
      const rm::Candidate x{a, 0.0, pa, 0, 0}, y{b, 0.0, pb, 0, 0};
      ASSERT_EQ(selection::candidate_before(pa, a, pb, b, order),
                rm::candidate_before(x, y, smallest));
    }
  }
}

// The bitonic top-k keeps the set std::nth_element (partition_best) keeps, at every k.
TEST(DeviceRule, BitonicTopKEqualsPartitionBest) {
  std::mt19937 rng(11);
  SequentialTeam team;
  for (int trial = 0; trial < 400; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 300);
    std::vector<double> score(n);
    for (double& s : score) s = random_score(rng, 0.1);
    const bool smallest = rng() % 2;
    const int64_t P = rm::pow2_at_least(n);
    std::vector<int32_t> idx(P, -1);
    for (int i = 0; i < n; ++i) idx[i] = i;
    std::shuffle(idx.begin(), idx.begin() + n, rng);
    rm::bitonic_sort(team, idx.data(), P, [&](int32_t x, int32_t y) {
      return rm::candidate_before(rm::Candidate{score[x], 0.0, x, 0, x},
                                  rm::Candidate{score[y], 0.0, y, 0, y}, smallest);
    });
    for (int64_t i = n; i < P; ++i) ASSERT_EQ(idx[i], -1);
    const auto order = smallest ? selection::Order::Smallest : selection::Order::Largest;
    for (int k : {0, 1, n / 3, n / 2, n - 1, n}) {
      std::vector<int32_t> cand(n);
      for (int i = 0; i < n; ++i) cand[i] = i;
      std::shuffle(cand.begin(), cand.end(), rng);
      const auto end = selection::keep_best(cand.begin(), cand.end(), static_cast<size_t>(k),
                                            [&](int32_t c) { return score[c]; }, order);
      std::vector<int32_t> want(cand.begin(), end);
      std::vector<int32_t> got(idx.begin(), idx.begin() + std::min(k, n));
      std::sort(got.begin(), got.end());
      ASSERT_EQ(want, got) << "trial " << trial << " k " << k;
    }
  }
}

// Split-K: partial softmaxes merged equal one softmax over all keys.
TEST(DeviceRule, SplitKMergeEqualsSoftmax) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.0f, 3.0f);
  const auto ex = [](float x) { return std::exp(x); };
  for (int trial = 0; trial < 300; ++trial) {
    const int keys = 1 + static_cast<int>(rng() % 700), dim = 1 + static_cast<int>(rng() % 9);
    const int splits = rm::split_count(keys, 1 + static_cast<int>(rng() % 64), 264, 16, 64);
    ASSERT_GE(splits, 1);
    std::vector<float> s(keys), v(static_cast<size_t>(keys) * dim);
    for (float& x : s) x = g(rng) * (trial % 10 == 0 ? 30.0f : 1.0f);
    for (float& x : v) x = g(rng);
    // Reference: one softmax in double.
    double mx = -INFINITY, sum = 0.0;
    for (float x : s) mx = std::max<double>(mx, x);
    for (float x : s) sum += std::exp(x - mx);
    std::vector<double> ref(dim, 0.0);
    for (int k = 0; k < keys; ++k)
      for (int d = 0; d < dim; ++d) ref[d] += std::exp(s[k] - mx) / sum * v[k * dim + d];
    // Partials over contiguous chunks (some possibly empty), merged.
    const int chunk = (keys + splits - 1) / splits;
    std::vector<float> m(splits, -INFINITY), l(splits, 0.0f), o(static_cast<size_t>(splits) * dim, 0.0f);
    for (int i = 0; i < splits; ++i) {
      const int lo = i * chunk, hi = std::min(keys, lo + chunk);
      for (int k = lo; k < hi; ++k) m[i] = std::max(m[i], s[k]);
      for (int k = lo; k < hi; ++k) {
        const float e = std::exp(s[k] - m[i]);
        l[i] += e;
        for (int d = 0; d < dim; ++d) o[i * dim + d] += e * v[k * dim + d];
      }
    }
    const rm::SoftmaxTotals t = rm::merge_totals(m.data(), l.data(), splits, ex);
    ASSERT_FLOAT_EQ(static_cast<float>(mx), t.max);
    ASSERT_NEAR(sum, t.sum, 1e-5 * sum);
    for (int d = 0; d < dim; ++d)
      ASSERT_NEAR(ref[d], rm::merge_output(m.data(), o.data(), splits, dim, d, t, ex),
                  1e-4 * (1.0 + std::fabs(ref[d])));
    for (int k = 0; k < keys; k += 7)
      ASSERT_NEAR(std::exp(s[k] - mx) / sum, std::exp(s[k] - t.max) / t.sum, 1e-6);
  }
}

TEST(DeviceRule, SplitCountFillsTheDeviceWithinLimits) {
  EXPECT_EQ(rm::split_count(100, 32, 264, 256, 32), 1);          // short cache: one block
  EXPECT_EQ(rm::split_count(4096, 32, 264, 256, 32), 9);         // 32 heads x 9 >= 264 blocks
  EXPECT_EQ(rm::split_count(600, 32, 264, 256, 32), 3);          // limited by keys per split
  EXPECT_EQ(rm::split_count(1 << 20, 1, 264, 256, 32), 32);      // limited by max splits
}

TEST(DeviceRule, GeometricGrowth) {
  EXPECT_EQ(rm::grown_capacity(10, 0), 256);
  EXPECT_EQ(rm::grown_capacity(100, 256), 256);
  EXPECT_EQ(rm::grown_capacity(257, 256), 512);  // 384 rounded to the granule
  EXPECT_EQ(rm::grown_capacity(5000, 256), 5120);
  // One element at a time up to 1M: O(log n) reallocations, never below what is needed.
  int64_t cap = 0;
  int grows = 0;
  for (int64_t n = 1; n <= (1 << 20); ++n) {
    const int64_t next = rm::grown_capacity(n, cap);
    ASSERT_GE(next, n);
    if (next != cap) ++grows;
    cap = next;
  }
  EXPECT_LE(grows, 40);
  EXPECT_LE(cap, 2 * (1 << 20));
}

}  // namespace
}  // namespace kvc::cuda

namespace kvc::cuda {
namespace {

// The switches: unverified paths are off unless asked for; bad values name the variable.
TEST(CudaOptions, DefaultsKeepTheVerifiedPaths) {
  const CudaOptions o = CudaOptions::parse([](const char*) -> const char* { return nullptr; });
  EXPECT_FALSE(o.device_rules);
  EXPECT_FALSE(o.live_signals);
  EXPECT_FALSE(o.graphs);
  EXPECT_FALSE(o.split_k);
  EXPECT_EQ(o.split_k_min_keys, 256);
  EXPECT_EQ(o.describe(),
            "rules=host signal_fetch=all graphs=0 decode_attention=block");
}

TEST(CudaOptions, ParsesEverySwitch) {
  const auto env = [](const char* name) -> const char* {
    const std::string n = name;
    if (n == "KVC_CUDA_RULES") return "device";
    if (n == "KVC_CUDA_SIGNAL_FETCH") return "live";
    if (n == "KVC_CUDA_GRAPHS") return "1";
    if (n == "KVC_CUDA_DECODE_ATTENTION") return "splitk";
    if (n == "KVC_CUDA_SPLITK_MIN_KEYS") return "512";
    return nullptr;
  };
  const CudaOptions o = CudaOptions::parse(env);
  EXPECT_TRUE(o.device_rules && o.live_signals && o.graphs && o.split_k);
  EXPECT_EQ(o.split_k_min_keys, 512);
}

TEST(CudaOptions, RejectsUnknownValues) {
  try {
    CudaOptions::parse([](const char* name) -> const char* {
      return std::string(name) == "KVC_CUDA_RULES" ? "gpu" : nullptr;
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KVC_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("KVC_CUDA_RULES='gpu' is not one of host|device"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(CudaOptions::parse([](const char* name) -> const char* {
                 return std::string(name) == "KVC_CUDA_SPLITK_MIN_KEYS" ? "12x" : nullptr;
               }),
               Error);
}

}  // namespace
}  // namespace kvc::cuda
