// The methods beyond the seed (tova, snapkv, pyramidkv, knorm, keydiff, scissorhands) and the
// adaptive allocation option, through PolicyInstance: each plugin's setup, its kept sets on
// hand-made signal tables, and its parameter errors (docs/policies.md).
#include <gtest/gtest.h>

#include "policy_test_util.h"

namespace kvc {
namespace {

using test::Cache;
using test::expect_error;
using test::HeadData;
using test::PlanBuffer;
using test::step_decide;
using test::TestHost;
using Pos = std::vector<int64_t>;

std::unique_ptr<PolicyInstance> make(const std::string& name, std::vector<kvc_param> params,
                                     const TestHost& host = TestHost()) {
  return std::make_unique<PolicyInstance>(load_policy(name, KVC_BUILD_POLICY_DIR), host.host,
                                          params.data(), params.size());
}

// `n` entries at positions 0..n-1 in every head, with `member` of head g at position p set to
// value(g, p) (accumulated attention 0 unless given).
template <class Value>
void fill(Cache& c, int64_t n, std::vector<float> HeadData::*member, Value value) {
  c.fill(n, [](int64_t p) { return static_cast<int32_t>(p); },
         [](int64_t, int64_t) { return 0.f; });
  for (size_t g = 0; g < c.heads.size(); ++g)
    for (int64_t p = 0; p < n; ++p)
      (c.heads[g].*member).push_back(value(static_cast<int64_t>(g), p));
}

// One decision; returns the kept positions of every head.
std::vector<Pos> decide_all(PolicyInstance& p, Cache& c, int64_t n_new = 1) {
  PlanBuffer pb(c);
  step_decide(p, c.make_view(n_new), pb.plan);
  pb.apply(c);
  std::vector<Pos> out;
  for (const auto& h : c.heads) out.push_back(h.positions);
  return out;
}

TEST(PolicyTova, DefaultsArePerLayerLatestAttentionWithinTheBudget) {
  auto p = make("tova", {});
  const kvc_policy_setup& s = p->setup();
  EXPECT_EQ(s.signals, KVC_SIGNAL_LAST_ATTENTION);
  EXPECT_EQ(s.rule.scope, KVC_SCOPE_PER_LAYER);
  EXPECT_EQ(s.rule.sink_size, 0);
  EXPECT_EQ(s.rule.recent_size, 1);  // the newest entry
  EXPECT_EQ(s.rule.heavy_size, 255);
  EXPECT_EQ(s.capacity, 256);
  EXPECT_EQ(s.trigger_size, 256);
  EXPECT_EQ(s.rule.allocation, KVC_ALLOCATION_UNIFORM);
}

TEST(PolicyTova, PerLayerAveragesTheHeadsPerHeadRanksEachAlone) {
  // budget 4, one sink: keep position 0, the newest (6) and the best two of 1..5.
  const auto last = [](int64_t g, int64_t p) {
    // head 0 favours 1 and 2, head 1 favours 4 and 5; averaged, 2 (0.55) and 4 (0.5) win.
    const float h0[] = {0, 0.9f, 0.8f, 0, 0.2f, 0, 0}, h1[] = {0, 0, 0.3f, 0, 0.8f, 0.9f, 0};
    return g == 0 ? h0[p] : h1[p];
  };
  Cache c(1, 2);
  fill(c, 7, &HeadData::last, last);
  auto per_layer = make("tova", {{"budget", "4"}, {"start_size", "1"}});
  EXPECT_EQ(decide_all(*per_layer, c), (std::vector<Pos>{{0, 2, 4, 6}, {0, 2, 4, 6}}));
  fill(c, 7, &HeadData::last, last);
  auto per_head = make("tova", {{"budget", "4"}, {"start_size", "1"}, {"granularity", "per_head"}});
  EXPECT_EQ(per_head->setup().rule.scope, KVC_SCOPE_PER_HEAD);
  EXPECT_EQ(decide_all(*per_head, c), (std::vector<Pos>{{0, 1, 2, 6}, {0, 4, 5, 6}}));
}

TEST(PolicyTova, BadParametersAreNamed) {
  expect_error([] { make("tova", {{"budget", "4"}, {"start_size", "4"}}); },
               KVC_ERR_INVALID_ARGUMENT, {"policy 'tova'", "budget 4 must exceed start_size 4"});
  expect_error([] { make("tova", {{"budget", "0"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"budget", "0"});
  expect_error([] { make("tova", {{"granularity", "per_token"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"granularity", "per_token", "per_layer, per_head"});
  expect_error([] { make("tova", {{"allocation", "adaptive"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"allocation = adaptive needs per-head scores", "granularity = per_layer"});
  auto ok = make("tova", {{"allocation", "adaptive"}, {"granularity", "per_head"}});
  EXPECT_EQ(ok->setup().rule.allocation, KVC_ALLOCATION_ADAPTIVE);
}

TEST(PolicySnapKV, DefaultsAreTheWindowAndPooledWindowAttention) {
  auto p = make("snapkv", {});
  const kvc_rule& r = p->setup().rule;
  EXPECT_EQ(p->setup().signals, KVC_SIGNAL_WINDOW_ATTENTION);
  EXPECT_EQ(r.heavy_signal, KVC_SIGNAL_WINDOW_ATTENTION);
  EXPECT_EQ(r.sink_size, 0);
  EXPECT_EQ(r.recent_size, 32);   // the observation window is kept
  EXPECT_EQ(r.signal_window, 32); // and scores the middle
  EXPECT_EQ(r.heavy_size, 224);
  EXPECT_EQ(r.pooling, KVC_POOLING_AVG);
  EXPECT_EQ(r.pool_kernel, 5);
  EXPECT_EQ(r.scope, KVC_SCOPE_PER_HEAD);
  EXPECT_EQ(p->setup().capacity, 256);
}

TEST(PolicySnapKV, PoolsTheWindowScoresOverTheMiddle) {
  // start 1, window 2, heavy 1, kernel 3. Middle ranks 1..6 score 0 4 0 0 3 3 (sink and
  // window 100, outside the middle): avg pooling gives 4/3 4/3 4/3 1 2 2, so 5 wins; max
  // pooling gives 4 4 4 3 3 3, so 1 (the oldest of the 4s) wins.
  const float raw[] = {100, 0, 4, 0, 0, 3, 3, 100, 100};
  const auto window = [&](int64_t, int64_t p) { return raw[p]; };
  Cache c(1, 1);
  fill(c, 9, &HeadData::window, window);
  auto avg = make("snapkv", {{"start_size", "1"}, {"window", "2"}, {"heavy_size", "1"},
                             {"kernel_size", "3"}});
  EXPECT_EQ(decide_all(*avg, c)[0], (Pos{0, 5, 7, 8}));
  fill(c, 9, &HeadData::window, window);
  auto max = make("snapkv", {{"start_size", "1"}, {"window", "2"}, {"heavy_size", "1"},
                             {"kernel_size", "3"}, {"pooling", "max"}});
  EXPECT_EQ(max->setup().rule.pooling, KVC_POOLING_MAX);
  EXPECT_EQ(decide_all(*max, c)[0], (Pos{0, 1, 7, 8}));
}

TEST(PolicySnapKV, BadParametersAreNamed) {
  expect_error([] { make("snapkv", {{"kernel_size", "4"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"policy 'snapkv'", "kernel_size 4 must be odd"});
  expect_error([] { make("snapkv", {{"window", "0"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"window", "0"});
  expect_error([] { make("pyramidkv", {{"pooling", "min"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"pooling", "min", "avg, max"});
  expect_error([] { make("snapkv", {{"floor", "1.5"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"floor", "1.5"});
}

TEST(PolicyPyramidKV, LayerBudgetsFollowThePapersSchedule) {
  // heavy 16, beta 20, 4 layers: min 0, max 32, step 10.
  auto p = make("pyramidkv", {{"heavy_size", "16"}}, TestHost(4, 2));
  const kvc_rule& r = p->setup().rule;
  ASSERT_EQ(r.n_layer_heavy_sizes, 4u);
  EXPECT_EQ(std::vector<int64_t>(r.layer_heavy_sizes, r.layer_heavy_sizes + 4),
            (std::vector<int64_t>{32, 22, 12, 2}));
  EXPECT_EQ(p->setup().capacity, 0 + 32 + 32);  // the bottom layer's keep count
  // The defaults on Pythia-2.8B's 32 layers: min 11, max 437, step 13; the top keeps 34.
  auto big = make("pyramidkv", {}, TestHost(32, 32));
  const kvc_rule& b = big->setup().rule;
  ASSERT_EQ(b.n_layer_heavy_sizes, 32u);
  EXPECT_EQ(b.layer_heavy_sizes[0], 437);
  EXPECT_EQ(b.layer_heavy_sizes[31], 34);
  // One layer keeps heavy_size; without a model (a parameter check) there are no layers yet.
  auto one = make("pyramidkv", {{"heavy_size", "16"}}, TestHost(1, 2));
  EXPECT_EQ(one->setup().rule.layer_heavy_sizes[0], 16);
  auto none = make("pyramidkv", {}, TestHost(0, 0));
  EXPECT_EQ(none->setup().rule.n_layer_heavy_sizes, 0u);
  expect_error([] { make("pyramidkv", {{"beta", "0"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"beta", "0"});
}

TEST(PolicyPyramidKV, EachLayerKeepsItsOwnBudget) {
  // 2 layers, heavy 2, beta 2: min 1, max 3, step 2 -> budgets 3 and 1. No sinks, window 1.
  auto p = make("pyramidkv", {{"window", "1"}, {"heavy_size", "2"}, {"beta", "2"},
                              {"kernel_size", "1"}},
                TestHost(2, 1));
  Cache c(2, 1);
  fill(c, 6, &HeadData::window, [](int64_t, int64_t pos) { return float(pos % 3); });
  // Middle ranks 0..4 score 0 1 2 0 1: layer 0 keeps 3 (2, then 1 and 4: older 1), layer 1 one.
  EXPECT_EQ(decide_all(*p, c), (std::vector<Pos>{{1, 2, 4, 5}, {2, 5}}));
}

TEST(PolicyKNorm, KeepsTheLowestKeyNorms) {
  auto p = make("knorm", {{"start_size", "1"}, {"recent_size", "1"}, {"heavy_size", "2"}});
  EXPECT_EQ(p->setup().signals, KVC_SIGNAL_KEY_NORM);
  EXPECT_EQ(p->setup().rule.heavy_order, KVC_ORDER_SMALLEST);
  EXPECT_EQ(p->setup().rule.scope, KVC_SCOPE_PER_HEAD);
  Cache c(1, 2);
  const float norms[2][6] = {{1, 5, 2, 3, 9, 9}, {1, 2, 2, 1, 7, 9}};
  fill(c, 6, &HeadData::norms, [&](int64_t g, int64_t pos) { return norms[g][pos]; });
  // head 0: middle 1..4 -> 2 (2) and 3 (3); head 1: 3 (1), then the tie 1/2 -> older 1.
  EXPECT_EQ(decide_all(*p, c), (std::vector<Pos>{{0, 2, 3, 5}, {0, 1, 3, 5}}));
  auto d = make("knorm", {});
  EXPECT_EQ(d->setup().capacity, 384);
  expect_error([] { make("knorm", {{"scope", "shared"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"unknown parameter 'scope'"});
}

TEST(PolicyKeyDiff, KeepsTheKeysLeastLikeTheMean) {
  auto p = make("keydiff", {{"start_size", "0"}, {"recent_size", "1"}, {"heavy_size", "1"}});
  EXPECT_EQ(p->setup().signals, KVC_SIGNAL_KEY_MEAN_COSINE);
  EXPECT_EQ(p->setup().rule.heavy_order, KVC_ORDER_SMALLEST);
  Cache c(1, 1);
  const float cosine[] = {0.9f, -0.2f, 0.5f, 0.99f};
  fill(c, 4, &HeadData::cosine, [&](int64_t, int64_t pos) { return cosine[pos]; });
  EXPECT_EQ(decide_all(*p, c)[0], (Pos{1, 3}));
  EXPECT_EQ(make("keydiff", {})->setup().capacity, 384);
}

TEST(PolicyScissorhands, ImportanceThenAccumulatedAttentionThenAge) {
  auto p = make("scissorhands", {{"start_size", "1"}, {"recent_size", "1"}, {"heavy_size", "2"},
                                 {"history", "8"}});
  const kvc_rule& r = p->setup().rule;
  EXPECT_EQ(p->setup().signals, KVC_SIGNAL_PIVOTAL_COUNT | KVC_SIGNAL_ACC_ATTENTION);
  EXPECT_EQ(r.heavy_signal, KVC_SIGNAL_PIVOTAL_COUNT);
  EXPECT_EQ(r.tie_signal, KVC_SIGNAL_ACC_ATTENTION);
  EXPECT_EQ(r.signal_window, 8);
  Cache c(1, 1);
  // Middle 1..5 counts 3 5 3 3 1: 2 first, then the threes by accumulated attention: 4.
  const float counts[] = {0, 3, 5, 3, 3, 1, 0};
  const float acc[] = {0, 0.5f, 0.1f, 0.5f, 0.7f, 2.0f, 0};
  fill(c, 7, &HeadData::pivotal, [&](int64_t, int64_t pos) { return counts[pos]; });
  for (int64_t pos = 0; pos < 7; ++pos) c.heads[0].acc[pos] = acc[pos];
  EXPECT_EQ(decide_all(*p, c)[0], (Pos{0, 2, 4, 6}));
  // With equal counts and scores, the older entry.
  fill(c, 7, &HeadData::pivotal, [](int64_t, int64_t) { return 2.f; });
  EXPECT_EQ(decide_all(*p, c)[0], (Pos{0, 1, 2, 6}));
  EXPECT_EQ(make("scissorhands", {})->setup().rule.signal_window, 256);
  expect_error([] { make("scissorhands", {{"history", "0"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"history", "0"});
}

TEST(PolicyAllocation, AdaptiveIsAnOptionOfEveryPerHeadScoredRule) {
  for (const char* name : {"h2o", "lazy_h2o", "snapkv", "pyramidkv", "knorm", "keydiff",
                           "scissorhands"}) {
    SCOPED_TRACE(name);
    auto uniform = make(name, {});
    EXPECT_EQ(uniform->setup().rule.allocation, KVC_ALLOCATION_UNIFORM);
    auto p = make(name, {{"allocation", "adaptive"}, {"floor", "0.3"}}, TestHost(2, 4));
    EXPECT_EQ(p->setup().rule.allocation, KVC_ALLOCATION_ADAPTIVE);
    EXPECT_DOUBLE_EQ(p->setup().rule.allocation_floor, 0.3);
    EXPECT_EQ(p->setup().capacity, -1);  // a head may take more than its share
  }
  for (const char* name : {"h2o", "lazy_h2o"})
    expect_error([&] { make(name, {{"allocation", "adaptive"}, {"scope", "shared"}}); },
                 KVC_ERR_INVALID_ARGUMENT,
                 {"allocation = adaptive needs per-head scores", "scope = shared"});
  expect_error([] { make("h2o", {{"allocation", "greedy"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"allocation", "greedy", "uniform, adaptive"});
}

TEST(PolicyAllocation, AdaptiveKnormSharesTheLayersBudgetByScore) {
  // One layer, two heads, no sinks, window 1, heavy 2, floor 0.5: each head keeps its own
  // lowest norm, the other two slots go to the lowest remaining norms of either head.
  auto p = make("knorm", {{"start_size", "0"}, {"recent_size", "1"}, {"heavy_size", "2"},
                          {"allocation", "adaptive"}, {"floor", "0.5"}},
                TestHost(1, 2));
  Cache c(1, 2);
  const float norms[2][5] = {{1, 2, 3, 4, 0}, {9, 8, 1.5f, 7, 0}};
  fill(c, 5, &HeadData::norms, [&](int64_t g, int64_t pos) { return norms[g][pos]; });
  // own: head 0 -> 0 (1), head 1 -> 2 (1.5); pooled: head 0's 1 (2) and 2 (3).
  EXPECT_EQ(decide_all(*p, c), (std::vector<Pos>{{0, 1, 2, 4}, {2, 4}}));
}

}  // namespace
}  // namespace kvc
