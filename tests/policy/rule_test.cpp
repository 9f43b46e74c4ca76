// The rule engine (RuleEngine) and validate_plan on hand-made tables.
#include <gtest/gtest.h>

#include <cmath>

#include "policy_test_util.h"

namespace kvc {
namespace {

using test::Cache;
using test::concat;
using test::expect_error;
using test::iota_ranks;
using test::PlanBuffer;

// One decision of `rule` on a fresh engine (first step since reset); groups at or below
// `trigger_size` are left whole (-1: the rule runs on every group).
void execute_rule(const kvc_rule& rule, const kvc_cache_view& view, kvc_plan& plan,
                  int64_t trigger_size = -1) {
  RuleEngine engine(rule, trigger_size, view.n_layers, view.n_heads);
  engine.count_step();
  engine.decide(view, plan);
}

kvc_rule make_rule(int64_t sink, int64_t recent, int64_t heavy = 0,
                   kvc_scope scope = KVC_SCOPE_PER_HEAD) {
  kvc_rule r{};
  r.struct_size = sizeof r;
  r.sink_size = sink;
  r.recent_size = recent;
  r.heavy_size = heavy;
  r.heavy_signal = KVC_SIGNAL_ACC_ATTENTION;
  r.scope = scope;
  return r;
}

TEST(PolicyRule, SinksAndWindowShared) {
  Cache c(2, 2);
  c.fill(10, [](int64_t p) { return int32_t(p); }, [](int64_t, int64_t) { return 0.f; });
  PlanBuffer pb(c);
  execute_rule(make_rule(2, 3, 0, KVC_SCOPE_SHARED), c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  EXPECT_EQ(pb.plan.shared, 1);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 1, 7, 8, 9}));
  validate_plan(pb.plan, c.view, 5, "test");
}

TEST(PolicyRule, NothingWhenEverythingFits) {
  Cache c(1, 2);
  c.fill(5, [](int64_t p) { return int32_t(p); }, [](int64_t, int64_t) { return 0.f; });
  PlanBuffer pb(c);
  execute_rule(make_rule(2, 3), c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_NOTHING);
  execute_rule(make_rule(2, 3, 0, KVC_SCOPE_SHARED), c.view, pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_NOTHING);
}

TEST(PolicyRule, HeavyHittersPerHead) {
  Cache c(1, 2);
  // head 0 favours ranks 3 and 5, head 1 ranks 2 and 6; the window (8, 9) scores high too.
  c.fill(10, [](int64_t p) { return int32_t(p); }, [](int64_t g, int64_t p) {
    if (g == 0) return (p == 3 || p == 5) ? 2.f : p >= 8 ? 9.f : 0.1f * float(p);
    return (p == 2 || p == 6) ? 3.f : 0.f;
  });
  PlanBuffer pb(c);
  execute_rule(make_rule(1, 2, 2), c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  EXPECT_EQ(pb.plan.shared, 0);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 3, 5, 8, 9}));
  EXPECT_EQ(pb.list(1), (std::vector<int32_t>{0, 2, 6, 8, 9}));
  validate_plan(pb.plan, c.view, 5, "test");
}

TEST(PolicyRule, TiesGoToTheOlderEntry) {
  Cache c(1, 1);
  c.fill(12, [](int64_t p) { return int32_t(p); },
         [](int64_t, int64_t p) { return p == 7 ? 5.f : 1.f; });
  PlanBuffer pb(c);
  execute_rule(make_rule(2, 2, 3), c.make_view(), pb.plan);
  // middle = ranks 2..9; 7 is the best, then the tie 2, 3 (older first).
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 1, 2, 3, 7, 10, 11}));
}

TEST(PolicyRule, SharedScoreSumsScoreLayersOverHeads) {
  Cache c(2, 2);
  // Layer 0: head 0 likes rank 2, head 1 likes rank 3 (sum: 2 and 3 tie above the rest, 4 has
  // a large score in one head only). Layer 1 prefers rank 5 strongly.
  c.fill(8, [](int64_t p) { return int32_t(p); }, [](int64_t g, int64_t p) {
    switch (g) {
      case 0: return p == 2 ? 1.0f : p == 4 ? 0.9f : 0.f;
      case 1: return p == 3 ? 1.0f : 0.f;
      default: return p == 5 ? 10.f : 0.f;
    }
  });
  kvc_rule r = make_rule(1, 1, 2, KVC_SCOPE_SHARED);
  const int32_t layer0[] = {0};
  r.score_layers = layer0;
  r.n_score_layers = 1;
  PlanBuffer pb(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.shared, 1);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 2, 3, 7}));
  // All layers: rank 5 (10) first, then 2 and 3 tie at 1.0: the older one, 2.
  r.score_layers = nullptr;
  r.n_score_layers = 0;
  pb.reset(c);
  execute_rule(r, c.view, pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 2, 5, 7}));
}

TEST(PolicyRule, MostRecentSeparatorsThenHeavy) {
  Cache c(1, 1);
  // tokens: separator id 99 at positions 2, 4, 6, 7; window = last 2 (positions 10, 11).
  c.fill(12, [](int64_t p) { return (p == 2 || p == 4 || p == 6 || p == 7 || p == 11) ? 99 : 1; },
         [](int64_t, int64_t p) { return p == 6 ? 100.f : p == 3 ? 5.f : 0.f; });
  kvc_rule r = make_rule(1, 2, 1);
  const int32_t seps[] = {50, 99};
  r.separator_ids = seps;
  r.n_separator_ids = 2;
  r.separator_size = 2;
  PlanBuffer pb(c);
  execute_rule(r, c.make_view(), pb.plan);
  // separators 6 and 7 (the most recent of the middle); heavy among the rest: 3 (6 is taken).
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 3, 6, 7, 10, 11}));
}

TEST(PolicyRule, HeadsAtOrBelowTheTriggerAreLeftWhole) {
  Cache c(1, 2);
  c.fill(6, [](int64_t p) { return int32_t(p); }, [](int64_t, int64_t) { return 0.f; });
  c.head(0, 1).keep({0, 1, 2, 3, 4});  // head 1 holds 5 entries
  PlanBuffer pb(c);
  execute_rule(make_rule(1, 3), c.make_view(), pb.plan, /*trigger_size=*/5);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 3, 4, 5}));
  EXPECT_EQ(pb.list(1), iota_ranks(0, 5));
}

// ---- The rule's ABI 1.1 fields --------------------------------------------------------------

using Pos = std::vector<int64_t>;

TEST(PolicyRule, SmallestOrderKeepsTheLowestScoresWithNanLast) {
  Cache c(1, 1);
  c.fill(10, [](int64_t p) { return int32_t(p); }, [](int64_t, int64_t) { return 0.f; });
  c.heads[0].norms = {5, 3, 9, 1, 1, std::nanf(""), 2, 8, 6, 4};
  kvc_rule r = make_rule(1, 2, 2);
  r.heavy_signal = KVC_SIGNAL_KEY_NORM;
  r.heavy_order = KVC_ORDER_SMALLEST;
  PlanBuffer pb(c);
  execute_rule(r, c.make_view(), pb.plan);
  // Middle ranks 1..7: the two smallest norms are the tied 1s at ranks 3 and 4; NaN is last.
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 3, 4, 8, 9}));
  c.heads[0].norms = {5, std::nanf(""), std::nanf(""), 9, 9, 9, 9, 9, 6, 4};
  pb.reset(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 3, 4, 8, 9}));  // numbers before NaNs
}

TEST(PolicyRule, PerLayerScopeAveragesTheLayersHeads) {
  Cache c(2, 2);
  c.fill(6, [](int64_t p) { return int32_t(p); }, [](int64_t g, int64_t p) {
    switch (g) {
      case 0: return p == 2 ? 1.0f : 0.f;                   // layer 0, head 0
      case 1: return p == 3 ? 0.8f : 0.f;                   // layer 0, head 1
      case 2: return p == 4 ? 0.9f : p == 3 ? 0.6f : 0.f;   // layer 1, head 0
      default: return p == 3 ? 0.6f : 0.f;                  // layer 1, head 1
    }
  });
  kvc_rule r = make_rule(1, 1, 1, KVC_SCOPE_PER_LAYER);
  PlanBuffer pb(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  // Layer 0: means 0.5 (position 2) and 0.4 (3); layer 1: 0.6 (3) and 0.45 (4).
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 2, 5}));
  EXPECT_EQ(pb.list(1), (std::vector<int32_t>{0, 2, 5}));
  EXPECT_EQ(pb.list(2), (std::vector<int32_t>{0, 3, 5}));
  EXPECT_EQ(pb.list(3), (std::vector<int32_t>{0, 3, 5}));
}

TEST(PolicyRule, LayerBudgetsGiveEachLayerItsOwnSize) {
  Cache c(2, 1);
  c.fill(6, [](int64_t p) { return int32_t(p); },
         [](int64_t, int64_t p) { return p == 3 ? 2.f : p == 2 ? 1.f : 0.f; });
  const int64_t budgets[] = {2, 0};
  kvc_rule r = make_rule(1, 1, 0);
  r.layer_heavy_sizes = budgets;
  r.n_layer_heavy_sizes = 2;
  RuleEngine engine(r, /*trigger_size=*/2, 2, 1);
  const int64_t full[] = {6, 6}, fitting[] = {4, 2}, one_over[] = {4, 3};
  EXPECT_TRUE(engine.over(full));
  EXPECT_FALSE(engine.over(fitting));
  EXPECT_TRUE(engine.over(one_over));
  EXPECT_EQ(engine.max_keep_per_head(), 4);
  PlanBuffer pb(c);
  engine.count_step();
  engine.decide(c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 2, 3, 5}));
  EXPECT_EQ(pb.list(1), (std::vector<int32_t>{0, 5}));
}

TEST(PolicyRule, PoolingSmoothsScoresOverTheMiddle) {
  Cache c(1, 1);
  // Middle ranks 1..7 score 0 0 5 0 0 3 3; the sink and the window score 100 (not middle).
  const float raw[] = {100, 0, 0, 5, 0, 0, 3, 3, 100};
  c.fill(9, [](int64_t p) { return int32_t(p); }, [&](int64_t, int64_t p) { return raw[p]; });
  kvc_rule r = make_rule(1, 1, 1);
  PlanBuffer pb(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 3, 8}));  // unpooled: the 5
  // Average over 3 neighbours, outside the middle counting 0: ranks 6 and 7 both reach 2
  // (ranks 2..4 reach 5/3): the older, 6.
  r.pooling = KVC_POOLING_AVG;
  r.pool_kernel = 3;
  pb.reset(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 6, 8}));
  // Max over the neighbours in the middle: ranks 2, 3 and 4 reach 5: the oldest, 2.
  r.pooling = KVC_POOLING_MAX;
  pb.reset(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 2, 8}));
}

TEST(PolicyRule, TieSignalRanksEqualScoresBeforeAge) {
  Cache c(1, 1);
  c.fill(7, [](int64_t p) { return int32_t(p); }, [](int64_t, int64_t p) {
    return p == 4 ? 2.f : p == 2 ? 1.f : 0.f;  // accumulated attention: the tie-breaker
  });
  c.heads[0].last = {0, 1, 1, 1, 1, 1, 0};  // equal heavy scores over the middle
  kvc_rule r = make_rule(1, 1, 2);
  r.heavy_signal = KVC_SIGNAL_LAST_ATTENTION;
  PlanBuffer pb(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 1, 2, 6}));  // age decides
  r.tie_signal = KVC_SIGNAL_ACC_ATTENTION;
  pb.reset(c);
  execute_rule(r, c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 2, 4, 6}));  // the tie signal decides
}

// Ada-KV: one layer, two heads, per-head heavy budget 2, floor 0.5 (one each).
TEST(PolicyRule, AdaptiveAllocationPoolsTheLayersBudget) {
  Cache c(1, 2);
  c.fill(6, [](int64_t p) { return int32_t(p); }, [](int64_t g, int64_t p) {
    const float head0[] = {9, 8, 7, 0, 0, 0}, head1[] = {0, 0, 0, 0, 1, 0};
    return g == 0 ? head0[p] : head1[p];
  });
  kvc_rule r = make_rule(0, 1, 2);
  r.allocation = KVC_ALLOCATION_ADAPTIVE;
  r.allocation_floor = 0.5;
  r.update_interval = 3;  // lazy: steps 1 and 2 go FIFO, step 3 refreshes
  RuleEngine engine(r, /*trigger_size=*/3, 1, 2);
  EXPECT_EQ(engine.max_keep_per_head(), 1 + 2 * 2 - 1);
  const int64_t full[] = {6, 6}, even[] = {3, 3}, ragged[] = {4, 2};
  EXPECT_TRUE(engine.over(full));
  EXPECT_FALSE(engine.over(even));
  EXPECT_FALSE(engine.over(ragged));  // the layer's total decides, not each head

  // A multi-token step refreshes: each head keeps its best one (position 0 / position 4);
  // the two pooled slots go to the best remaining scores, both in head 0 (8 and 7).
  PlanBuffer pb(c);
  engine.count_step();
  engine.decide(c.make_view(/*n_new=*/6), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  pb.apply(c);
  EXPECT_EQ(c.heads[0].positions, (Pos{0, 1, 2, 5}));
  EXPECT_EQ(c.heads[1].positions, (Pos{4, 5}));

  // Step 2 (not a refresh): each head is back at the size the refresh gave it, dropping its
  // oldest unprotected middle entry (the previous window, position 5, in both).
  for (auto& h : c.heads) {
    h.positions.push_back(6);
    h.tokens.push_back(6);
    h.acc.push_back(0.f);
  }
  ++c.seen;
  pb.reset(c);
  engine.count_step();
  engine.decide(c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_EVICT);
  pb.apply(c);
  EXPECT_EQ(c.heads[0].positions, (Pos{0, 1, 2, 6}));
  EXPECT_EQ(c.heads[1].positions, (Pos{4, 6}));
}

TEST(PolicyRule, AdaptiveTiesGoToTheOlderPositionThenTheLowerHead) {
  Cache c(1, 3);
  // Equal middle scores of 1, except head 2's position 0 (0.5); floor 0, so the layer's three
  // slots are all pooled: (position 0, head 0), (0, head 1), then (1, head 0) before (1, head 1).
  c.fill(4, [](int64_t p) { return int32_t(p); },
         [](int64_t g, int64_t p) { return g == 2 && p == 0 ? 0.5f : 1.f; });
  kvc_rule r = make_rule(0, 1, 1);
  r.allocation = KVC_ALLOCATION_ADAPTIVE;
  r.allocation_floor = 0.0;
  RuleEngine engine(r, 2, 1, 3);
  PlanBuffer pb(c);
  engine.count_step();
  engine.decide(c.make_view(), pb.plan);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(pb.list(1), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(pb.list(2), (std::vector<int32_t>{3}));
}

TEST(PolicyRule, ValidateNamesTheDefect) {
  auto check = [](kvc_rule r, uint32_t signals, const char* needle) {
    RuleEngine e(r, 10, 2, 2);
    expect_error([&] { e.validate(signals, "bad: "); }, KVC_ERR_POLICY, {"bad: ", needle});
  };
  kvc_rule r = make_rule(1, 1, 1);
  check(r, 0, "does not request it");
  r.heavy_order = static_cast<kvc_order>(7);
  check(r, KVC_SIGNAL_ACC_ATTENTION, "unknown heavy_order 7");
  r = make_rule(1, 1, 1);
  r.allocation = KVC_ALLOCATION_ADAPTIVE;
  r.scope = KVC_SCOPE_SHARED;
  check(r, KVC_SIGNAL_ACC_ATTENTION, "needs the per-head scope");
  r = make_rule(1, 1, 1);
  r.pooling = KVC_POOLING_AVG;
  r.pool_kernel = 4;
  check(r, KVC_SIGNAL_ACC_ATTENTION, "odd width");
  r = make_rule(1, 1, 1);
  const int64_t three[] = {1, 2, 3};
  r.layer_heavy_sizes = three;
  r.n_layer_heavy_sizes = 3;
  check(r, KVC_SIGNAL_ACC_ATTENTION, "the model has 2 layers");
  r = make_rule(1, 1, 1);
  r.heavy_signal = KVC_SIGNAL_WINDOW_ATTENTION;
  check(r, KVC_SIGNAL_WINDOW_ATTENTION, "a window in [1, 65536]");
}

// ---- validate_plan --------------------------------------------------------------------------

struct PlanCase {
  Cache c{1, 2};
  PlanBuffer pb{c};
  PlanCase() {
    c.fill(6, [](int64_t p) { return int32_t(p); }, [](int64_t, int64_t) { return 0.f; });
    pb.reset(c);
    c.make_view();
    pb.plan.kind = KVC_PLAN_KEEP;
    set(0, {0, 4, 5});
    set(1, {0, 4, 5});
  }
  void set(size_t g, std::vector<int32_t> ranks) {
    std::copy(ranks.begin(), ranks.end(), pb.ranks.begin() + g * pb.plan.stride);
    pb.counts[g] = static_cast<int64_t>(ranks.size());
  }
  void validate(int64_t capacity = 3) { validate_plan(pb.plan, c.view, capacity, "policy 'x'"); }
};

TEST(PolicyValidatePlan, AcceptsAGoodPlan) {
  PlanCase p;
  p.validate();
  p.pb.plan.kind = KVC_PLAN_EVICT;
  p.set(0, {1, 2, 3});
  p.set(1, {1, 2, 3});
  p.validate();
}

TEST(PolicyValidatePlan, OutOfRange) {
  PlanCase p;
  p.set(1, {0, 4, 6});
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY,
               {"policy 'x'", "rank 6 is out of range", "(layer 0, head 1)", "0..5"});
  p.set(1, {-1, 4, 5});
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY, {"rank -1 is out of range"});
}

TEST(PolicyValidatePlan, DuplicatesAndUnsorted) {
  PlanCase p;
  p.set(0, {0, 4, 4});
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY, {"not strictly increasing", "4 then 4"});
  p.set(0, {0, 5, 4});
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY, {"not strictly increasing", "5 then 4"});
}

TEST(PolicyValidatePlan, OverBudget) {
  PlanCase p;
  p.set(0, {0, 3, 4, 5});
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY,
               {"would hold 4 entries", "capacity 3", "(layer 0, head 0)"});
  p.set(0, {0, 4, 5});
  p.pb.plan.kind = KVC_PLAN_EVICT;  // evicting 3 of 6 leaves 3: fine; 2 of 6 is not
  p.set(0, {1, 2, 3});
  p.set(1, {1, 2});
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY, {"(layer 0, head 1) would hold 4"});
  p.pb.plan.kind = KVC_PLAN_NOTHING;  // keeping all 6 is over a capacity of 3
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY, {"would hold 6"});
  p.validate(-1);  // no capacity: anything goes
}

TEST(PolicyValidatePlan, UnknownKindAndBadCount) {
  PlanCase p;
  p.pb.plan.kind = static_cast<kvc_plan_kind>(9);
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY, {"unknown plan kind 9"});
  p.pb.plan.kind = KVC_PLAN_KEEP;
  p.pb.counts[1] = 7;
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY, {"has 7 ranks"});
}

TEST(PolicyValidatePlan, SharedNeedsIdenticalHeads) {
  PlanCase p;
  p.pb.plan.shared = 1;
  p.validate();
  p.c.head(0, 1).positions[3] = 42;
  p.c.make_view();
  expect_error([&] { p.validate(); }, KVC_ERR_POLICY,
               {"shared plan", "(layer 0, head 1) does not hold the same entries"});
}

}  // namespace
}  // namespace kvc
