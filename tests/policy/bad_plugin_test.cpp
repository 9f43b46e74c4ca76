// Plugins that misbehave at run time: invalid setups, invalid plans, failing calls. Each is
// reported as a clear kvc::Error and the instance stays usable or fails cleanly.
#include <gtest/gtest.h>

#include "policy_test_util.h"

namespace kvc {
namespace {

using test::bad_plugin_path;
using test::Cache;
using test::expect_error;
using test::PlanBuffer;
using test::TestHost;

std::unique_ptr<PolicyInstance> make_bad(const std::string& mode, const std::string& setup = "ok",
                                         const std::string& plugin = "bad_plan") {
  std::vector<kvc_param> params = {{"mode", mode.c_str()}, {"setup", setup.c_str()},
                                   {"capacity", "4"}};
  TestHost host(1, 2);
  return std::make_unique<PolicyInstance>(load_policy(bad_plugin_path(plugin), ""), host.host,
                                          params.data(), params.size());
}

// A 1-layer, 2-head cache with `n` entries.
Cache cache(int64_t n) {
  Cache c(1, 2);
  c.fill(n, [](int64_t) { return 1; }, [](int64_t, int64_t) { return 0.f; });
  c.make_view();
  return c;
}

void expect_bad_plan(const std::string& mode, std::initializer_list<std::string> needles) {
  auto p = make_bad(mode);
  Cache c = cache(6);
  PlanBuffer pb(c);
  expect_error([&] { p->decide(c.view, pb.plan); }, KVC_ERR_POLICY, needles);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_NOTHING);  // the rejected plan is never applied
  // The instance stays usable: a step within capacity is fine.
  Cache small = cache(4);
  PlanBuffer pb2(small);
  p->decide(small.view, pb2.plan);
  EXPECT_EQ(pb2.plan.kind, KVC_PLAN_NOTHING);
}

TEST(PolicyBadPlan, GoodModeIsAccepted) {
  auto p = make_bad("good");
  Cache c = cache(6);
  PlanBuffer pb(c);
  p->decide(c.view, pb.plan);
  EXPECT_EQ(pb.list(1), (std::vector<int32_t>{2, 3, 4, 5}));
}

TEST(PolicyBadPlan, OutOfRange) {
  expect_bad_plan("out_of_range",
                  {"policy 'bad_plan'", "libkvc_policy_bad_plan.so", "rank 6 is out of range"});
}

TEST(PolicyBadPlan, Duplicates) {
  expect_bad_plan("duplicate", {"policy 'bad_plan'", "not strictly increasing", "2 then 2"});
}

TEST(PolicyBadPlan, Unsorted) {
  expect_bad_plan("unsorted", {"not strictly increasing", "3 then 2"});
}

TEST(PolicyBadPlan, OverBudget) {
  expect_bad_plan("over_budget", {"would hold 5 entries", "capacity 4"});
}

TEST(PolicyBadPlan, UnknownKind) { expect_bad_plan("bad_kind", {"unknown plan kind 9"}); }

TEST(PolicyBadPlan, DecideFails) {
  expect_bad_plan("fail", {"policy 'bad_plan'", "decide failed: decide failed on purpose"});
}

TEST(PolicyBadPlan, SharedPlanOverDifferentHeads) {
  auto p = make_bad("shared_mismatch");
  Cache c = cache(6);
  c.head(0, 1).positions[2] = 77;
  c.make_view();
  PlanBuffer pb(c);
  expect_error([&] { p->decide(c.view, pb.plan); }, KVC_ERR_POLICY,
               {"shared plan", "(layer 0, head 1) does not hold the same entries"});
}

TEST(PolicyBadSetup, CreateRefuses) {
  expect_error([] { make_bad("good", "refuse"); }, KVC_ERR_INVALID_ARGUMENT,
               {"policy 'bad_plan'", "this plugin refuses: setup=refuse"});
}

TEST(PolicyBadSetup, UnknownTrigger) {
  expect_error([] { make_bad("good", "bad_trigger"); }, KVC_ERR_POLICY,
               {"invalid setup", "unknown trigger 7"});
}

TEST(PolicyBadSetup, HeavySignalNotRequested) {
  expect_error([] { make_bad("good", "heavy_without_signal"); }, KVC_ERR_POLICY,
               {"invalid setup", "does not request it in 'signals'"});
}

TEST(PolicyBadSetup, CapacityBelowTheRule) {
  expect_error([] { make_bad("good", "capacity_below_rule"); }, KVC_ERR_POLICY,
               {"may keep up to 5 entries", "more than the capacity 4"});
}

TEST(PolicyBadSetup, NegativeSize) {
  expect_error([] { make_bad("good", "negative_size"); }, KVC_ERR_POLICY,
               {"must not be negative", "recent -1"});
}

TEST(PolicyBadSetup, CallbackWithoutDecide) {
  expect_error([] { make_bad("good", "ok", "no_decide"); }, KVC_ERR_POLICY,
               {"policy 'no_decide'", "no rule and no decide callback"});
}

TEST(PolicyBadSetup, BadParametersOfABadPlugin) {
  expect_error([] { make_bad("sometimes"); }, KVC_ERR_INVALID_ARGUMENT,
               {"'mode' = 'sometimes'", "not one of the choices: good, out_of_range"});
}

}  // namespace
}  // namespace kvc
