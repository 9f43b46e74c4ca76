// The rule engine (RuleEngine) and validate_plan on hand-made tables.
#include <gtest/gtest.h>

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
