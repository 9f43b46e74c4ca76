// Each bundled policy's kept set on hand-made signal tables, through PolicyInstance (so the
// plugin's setup, its rule or its decide callback, and plan validation all take part).
#include <gtest/gtest.h>

#include "policy_test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvc {
namespace {

using test::Cache;
using test::expect_error;
using test::PlanBuffer;
using test::TestHost;
using test::step_decide;

std::unique_ptr<PolicyInstance> make(const std::string& name, std::vector<kvc_param> params,
                                     const TestHost& host = TestHost()) {
  return std::make_unique<PolicyInstance>(load_policy(name, KVC_BUILD_POLICY_DIR), host.host,
                                          params.data(), params.size());
}

// Runs one decision and returns the kept positions of head g (the plan applied).
std::vector<int64_t> decide_keep(PolicyInstance& p, Cache& c, size_t g = 0, int64_t n_new = 1) {
  PlanBuffer pb(c);
  c.make_view(n_new);
  step_decide(p, c.view, pb.plan);
  pb.apply(c);
  return c.heads[g].positions;
}

// Appends one entry (position = tokens seen) to every head with the given token and score.
void append(Cache& c, int32_t token, float score = 0.f) {
  for (auto& h : c.heads) {
    h.positions.push_back(c.seen);
    h.tokens.push_back(token);
    h.acc.push_back(score);
  }
  ++c.seen;
}

using Pos = std::vector<int64_t>;

TEST(PolicyBaseline, NeverEvicts) {
  auto p = make("baseline", {});
  EXPECT_EQ(p->setup().trigger, KVC_TRIGGER_NEVER);
  EXPECT_EQ(p->setup().capacity, -1);
  Cache c(2, 2);
  c.fill(5000, [](int64_t) { return 1; }, [](int64_t, int64_t) { return 0.f; });
  PlanBuffer pb(c);
  step_decide(*p, c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_NOTHING);
  expect_error([] { make("baseline", {{"start_size", "4"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"unknown parameter 'start_size'", "takes no parameters"});
}

TEST(PolicyStreaming, SinksAndWindow) {
  auto p = make("streaming", {{"start_size", "2"}, {"recent_size", "3"}});
  const kvc_policy_setup& s = p->setup();
  EXPECT_EQ(s.trigger, KVC_TRIGGER_OVER_CAPACITY);
  EXPECT_EQ(s.trigger_size, 5);
  EXPECT_EQ(s.capacity, 5);
  EXPECT_EQ(s.signals, 0u);
  Cache c(2, 2);
  for (int i = 0; i < 5; ++i) append(c, 7);
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 1, 2, 3, 4}));
  for (int64_t t = 5; t < 9; ++t) {
    append(c, 7);
    EXPECT_EQ(decide_keep(*p, c, 3), (Pos{0, 1, t - 2, t - 1, t}));
  }
  // A prefill far over capacity is cut in one decision.
  for (int i = 0; i < 20; ++i) append(c, 7);
  EXPECT_EQ(decide_keep(*p, c, 1, 20), (Pos{0, 1, 26, 27, 28}));
}

TEST(PolicyStreaming, Defaults) {
  auto p = make("streaming", {});
  EXPECT_EQ(p->setup().capacity, 256);
  EXPECT_EQ(p->setup().rule.sink_size, 4);
  expect_error([] { make("streaming", {{"start_size", "0"}, {"recent_size", "0"}}); },
               KVC_ERR_INVALID_ARGUMENT, {"policy 'streaming'", "at least 1"});
}

TEST(PolicyH2O, PerHeadKeepsEachHeadsHeavyHitters) {
  auto p = make("h2o", {{"start_size", "1"}, {"recent_size", "2"}, {"heavy_size", "2"}});
  EXPECT_EQ(p->setup().signals, KVC_SIGNAL_ACC_ATTENTION);
  EXPECT_EQ(p->setup().rule.scope, KVC_SCOPE_PER_HEAD);
  EXPECT_EQ(p->setup().capacity, 5);
  Cache c(2, 2);
  // head g favours middle positions g+1 and g+3 (ties elsewhere: older first).
  c.fill(6, [](int64_t) { return 1; },
         [](int64_t g, int64_t pos) { return (pos == g + 1 || pos == g + 3) ? 1.f : 0.5f; });
  PlanBuffer pb(c);
  step_decide(*p, c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  pb.apply(c);
  // Middle is positions 1..3: head 0 -> {1, 3}; head 1 -> {2} plus tie 1 (older);
  // head 2 -> {3} plus 1; head 3 -> nothing favoured in 1..3 -> {1, 2}.
  EXPECT_EQ(c.heads[0].positions, (Pos{0, 1, 3, 4, 5}));
  EXPECT_EQ(c.heads[1].positions, (Pos{0, 1, 2, 4, 5}));
  EXPECT_EQ(c.heads[2].positions, (Pos{0, 1, 3, 4, 5}));
  EXPECT_EQ(c.heads[3].positions, (Pos{0, 1, 2, 4, 5}));
}

TEST(PolicyH2O, SharedScoresLayerZeroSummedOverHeads) {
  auto p = make("h2o", {{"start_size", "1"}, {"recent_size", "1"}, {"heavy_size", "1"},
                        {"scope", "shared"}});
  EXPECT_EQ(p->setup().rule.scope, KVC_SCOPE_SHARED);
  ASSERT_EQ(p->setup().rule.n_score_layers, 1u);
  Cache c(2, 2);
  // Layer 0: position 2 wins the sum (0.6 + 0.6 > 1.0 + 0.0); layer 1 would pick 1.
  c.fill(5, [](int64_t) { return 1; }, [](int64_t g, int64_t pos) {
    if (g == 0) return pos == 1 ? 1.0f : pos == 2 ? 0.6f : 0.f;
    if (g == 1) return pos == 2 ? 0.6f : 0.f;
    return pos == 1 ? 5.f : 0.f;
  });
  for (size_t g = 0; g < 4; ++g) EXPECT_EQ(decide_keep(*p, c, g), (Pos{0, 2, 4}));
  // score_layers = 1: layer 1 decides.
  auto q = make("h2o", {{"start_size", "1"}, {"recent_size", "1"}, {"heavy_size", "1"},
                        {"scope", "shared"}, {"score_layers", "1"}});
  c.fill(5, [](int64_t) { return 1; },
         [](int64_t g, int64_t pos) { return g >= 2 && pos == 1 ? 5.f : 0.f; });
  EXPECT_EQ(decide_keep(*q, c, 3), (Pos{0, 1, 4}));
}

TEST(PolicyH2O, ScoreLayersMustExist) {
  expect_error([] { make("h2o", {{"scope", "shared"}, {"score_layers", "0,2"}}, TestHost(2, 2)); },
               KVC_ERR_INVALID_ARGUMENT, {"policy 'h2o'", "layer 2 does not exist", "2 layers"});
  expect_error([] { make("h2o", {{"score_layers", "[]"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"score_layers must list at least one layer"});
  expect_error([] { make("lazy_h2o", {{"score_layers", "1,1"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"layer 1 is listed twice"});
}

// lazy_h2o over several steps (1 layer, 1 head): start 1, recent 2, heavy 2, interval 3,
// so capacity 5; the counter counts every step from the first.
TEST(PolicyLazyH2O, RefreshThenFifoSequence) {
  auto p = make("lazy_h2o", {{"start_size", "1"}, {"recent_size", "2"}, {"heavy_size", "2"},
                             {"update_interval", "3"}});
  EXPECT_EQ(p->setup().trigger, KVC_TRIGGER_OVER_CAPACITY);
  EXPECT_EQ(p->setup().use_rule, 1);  // the engine's lazy refresh: no callback
  EXPECT_EQ(p->setup().rule.update_interval, 3);
  EXPECT_EQ(p->setup().capacity, 5);
  Cache c(1, 1);
  const float score[] = {0, 0.5f, 0.9f, 0.7f, 0, 0, 0, 0, 0, 0, 0};
  for (int t = 1; t <= 5; ++t) {  // steps 1..5 fill the cache: nothing to do
    append(c, 1, score[t - 1]);
    EXPECT_EQ(decide_keep(*p, c).size(), size_t(t));
  }
  append(c, 1);  // step 6: 6 % 3 == 0, refresh: heavy {2, 3} (0.9, 0.7) become protected
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 2, 3, 4, 5}));
  append(c, 1);  // step 7: FIFO, oldest unprotected middle entry is 4
  PlanBuffer pb(c);
  step_decide(*p, c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_EVICT);  // between refreshes: the leavers only
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{3}));  // one rank per head (position 4)
  pb.apply(c);
  EXPECT_EQ(c.heads[0].positions, (Pos{0, 2, 3, 5, 6}));
  append(c, 1);  // step 8: FIFO evicts 5
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 2, 3, 6, 7}));
  // step 9: refresh over the middle {2, 3, 6} with new scores: 6 and 3 win, 2 leaves
  c.heads[0].acc = {0, 0.1f, 0.8f, 0.9f, 0};
  append(c, 1);
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 3, 6, 7, 8}));
  append(c, 1);  // step 10: FIFO: 3 and 6 are protected, 7 goes
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 3, 6, 8, 9}));
  // reset forgets the counter and the protected set: FIFO now takes 3.
  p->reset();
  append(c, 1);
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 6, 8, 9, 10}));
}

TEST(PolicyLazyH2O, PerHeadAndSharedScopes) {
  // start 1, recent 1, heavy 1, interval 1: every step is a refresh (H2O, lazily bookkept).
  const std::vector<kvc_param> base = {{"start_size", "1"}, {"recent_size", "1"},
                                       {"heavy_size", "1"}, {"update_interval", "1"}};
  auto per_head = make("lazy_h2o", base);
  auto with_scope = base;
  with_scope.push_back({"scope", "shared"});
  auto shared = make("lazy_h2o", with_scope);
  Cache c(2, 2);
  auto scores = [](int64_t g, int64_t pos) { return pos == 1 + (g % 2) ? 1.f : 0.f; };
  c.fill(4, [](int64_t) { return 1; }, scores);
  PlanBuffer pb(c);
  step_decide(*per_head, c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  EXPECT_EQ(pb.plan.shared, 0);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(pb.list(1), (std::vector<int32_t>{0, 2, 3}));
  // Shared: layer 0 sums to a tie between 1 and 2: the older, 1.
  pb.reset(c);
  step_decide(*shared, c.make_view(), pb.plan);
  EXPECT_EQ(pb.plan.shared, 1);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 1, 3}));
}

TEST(PolicyLazyH2O, MultiTokenStepEvictsDownToCapacity) {
  auto p = make("lazy_h2o", {{"start_size", "1"}, {"recent_size", "2"}, {"heavy_size", "2"},
                             {"update_interval", "10"}});
  Cache c(1, 2);
  c.fill(9, [](int64_t) { return 1; }, [](int64_t, int64_t) { return 0.f; });
  PlanBuffer pb(c);
  // Head 0 favours positions 2 and 5, head 1 positions 1 and 6.
  for (int64_t pos : {2, 5}) c.heads[0].acc[pos] = 1.f;
  for (int64_t pos : {1, 6}) c.heads[1].acc[pos] = 1.f;
  // Step 1 is not a refresh step by the counter, but a prefill's one application is a full
  // selection (not FIFO), so the heavy hitters survive it.
  step_decide(*p, c.make_view(/*n_new=*/9), pb.plan);
  EXPECT_EQ(pb.plan.kind, KVC_PLAN_KEEP);
  EXPECT_EQ(pb.list(0), (std::vector<int32_t>{0, 2, 5, 7, 8}));
  EXPECT_EQ(pb.list(1), (std::vector<int32_t>{0, 1, 6, 7, 8}));
  pb.apply(c);
  // They are protected: the next single-token step evicts the oldest other middle entry (7).
  append(c, 1);
  EXPECT_EQ(decide_keep(*p, c, 0), (Pos{0, 2, 5, 8, 9}));
}

TEST(PolicySepLLM, BurstKeepsSinksRecentSeparatorsAndWindow) {
  auto p = make("sepllm", {{"start_size", "1"}, {"separator_size", "2"}, {"local_size", "2"},
                           {"cache_size", "7"}, {"separators", "99, 98"}});
  const kvc_policy_setup& s = p->setup();
  EXPECT_EQ(s.trigger, KVC_TRIGGER_OVER_CAPACITY);
  EXPECT_EQ(s.trigger_size, 7);
  EXPECT_EQ(s.capacity, 7);
  EXPECT_EQ(s.signals, 0u);
  Cache c(2, 2);
  const int32_t tokens[] = {99, 5, 99, 5, 98, 99, 5, 5, 5, 5, 99, 5, 5};
  for (int i = 0; i < 7; ++i) append(c, tokens[i]);
  EXPECT_EQ(decide_keep(*p, c).size(), 7u);  // at cache_size: nothing happens
  append(c, tokens[7]);
  // Middle = positions 1..5; separators there: 2, 4, 5 -> the most recent two: 4, 5.
  EXPECT_EQ(decide_keep(*p, c, 3), (Pos{0, 4, 5, 6, 7}));
  // The cache grows back to 7 without evicting, then the next burst keeps separators 4, 5
  // (10 is still in the window), then 10 replaces 4 once it leaves the window.
  for (int t = 8; t < 10; ++t) {
    append(c, tokens[t]);
    EXPECT_EQ(decide_keep(*p, c).size(), size_t(t - 8 + 6));
  }
  append(c, tokens[10]);
  append(c, tokens[11]);
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 4, 5, 10, 11}));
  append(c, tokens[12]);
  EXPECT_EQ(decide_keep(*p, c).size(), 6u);
}

// The GPT-NeoX-20B tokenizer (../shared/data) behind a policy host.
const kvc::Tokenizer& neox_tokenizer() {
  static const auto tok = kvc::Tokenizer::load_file(std::string(KVC_SHARED_DATA_DIR) +
                                                    "/gpt-neox-20b-tokenizer.json");
  return *tok;
}
int64_t neox_tokenize(void*, const char* text, int32_t* ids, size_t cap) {
  const std::vector<int32_t> out = neox_tokenizer().encode(text);
  for (size_t i = 0; i < out.size() && i < cap; ++i) ids[i] = out[i];
  return static_cast<int64_t>(out.size());
}

TEST(PolicySepLLM, DefaultSeparatorsAreStringsThroughTheModelsTokenizer) {
  // Without a model (checking parameters): nothing to resolve yet.
  kvc_policy_host none{};
  none.struct_size = sizeof none;
  EXPECT_EQ(make("sepllm", {}, TestHost(0, 0))->setup().rule.n_separator_ids, 0u);
  // GPT-NeoX-20B: exactly SepLLM's 20 ids.
  TestHost neox(2, 2);
  neox.host.tokenize = &neox_tokenize;
  auto p = make("sepllm", {}, neox);
  const kvc_rule& r = p->setup().rule;
  EXPECT_EQ(p->setup().capacity, 512);
  EXPECT_EQ(r.sink_size, 4);
  EXPECT_EQ(r.separator_size, 64);
  EXPECT_EQ(r.recent_size, 256);
  std::vector<int32_t> ids(r.separator_ids, r.separator_ids + r.n_separator_ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 13, 15, 27, 28, 32, 186, 187, 209, 586, 964, 1157,
                                       1163, 2195, 2490, 3706, 3736, 4928, 50275, 50276}));
  EXPECT_TRUE(p->notes().empty());
  // The toy tokenizer (one token per byte; " x" one token): "\n ", " \n " and three spaces
  // are two tokens each, dropped and named in the notes.
  auto toy = make("sepllm", {}, TestHost(2, 2, true));
  EXPECT_EQ(toy->setup().rule.n_separator_ids, 17u);
  ASSERT_EQ(toy->notes().size(), 3u);
  EXPECT_NE(toy->notes()[0].find("default separator \"\\n \" is not one token"),
            std::string::npos)
      << toy->notes()[0];
  // A model without a tokenizer cannot resolve the default strings.
  expect_error([] { make("sepllm", {}, TestHost(2, 2)); }, KVC_ERR_INVALID_ARGUMENT,
               {"the default separators are strings", "no tokenizer"});
  // Ids outside the vocabulary are an error naming both.
  expect_error([] { make("sepllm", {{"separators", "99999999"}}, TestHost(2, 2)); },
               KVC_ERR_INVALID_ARGUMENT, {"id 99999999", "vocabulary of 50304"});
}

TEST(PolicySepLLM, SeparatorStrings) {
  // Toy tokenizer: "x" -> 120, " x" -> 1120; "ab" is two tokens and adds nothing.
  auto q = make("sepllm", {{"separators", ""}, {"separator_strings", "x, ab"}},
                TestHost(2, 2, true));
  const kvc_rule& rq = q->setup().rule;
  ASSERT_EQ(rq.n_separator_ids, 2u);
  EXPECT_EQ(rq.separator_ids[0], 120);
  EXPECT_EQ(rq.separator_ids[1], 1120);
  // Without a tokenizer, strings cannot be mapped.
  expect_error([] { make("sepllm", {{"separator_strings", "x"}}, TestHost(2, 2)); },
               KVC_ERR_INVALID_ARGUMENT, {"separator_strings needs the model's tokenizer"});
}

TEST(PolicySepLLM, SizesMustFitTheCache) {
  expect_error([] { make("sepllm", {{"cache_size", "324"}}); }, KVC_ERR_INVALID_ARGUMENT,
               {"policy 'sepllm'", "(4 + 64 + 256 = 324) must be less than cache_size (324)"});
}

TEST(PolicyUnified, RuleKeepsSeparatorsBeforeHeavyHitters) {
  auto p = make("unified", {{"start_size", "1"}, {"separator_size", "1"}, {"heavy_size", "1"},
                            {"local_size", "2"}, {"separators", "99"}});
  EXPECT_EQ(p->setup().use_rule, 1);
  EXPECT_EQ(p->setup().capacity, 5);
  Cache c(1, 2);
  // Middle = positions 1..4; separators 2 and 3 (3 is the most recent); head 0 scores 2 best
  // (a separator, but not kept as one), head 1 scores 4 best.
  c.fill(7, [](int64_t pos) { return pos == 2 || pos == 3 ? 99 : 5; },
         [](int64_t g, int64_t pos) { return (g == 0 ? pos == 2 : pos == 4) ? 1.f : 0.f; });
  PlanBuffer pb(c);
  step_decide(*p, c.make_view(), pb.plan);
  pb.apply(c);
  EXPECT_EQ(c.heads[0].positions, (Pos{0, 2, 3, 5, 6}));
  EXPECT_EQ(c.heads[1].positions, (Pos{0, 3, 4, 5, 6}));
  // Unused separator slots stay empty: no separator at all keeps 4 entries.
  c.fill(7, [](int64_t) { return 5; }, [](int64_t, int64_t) { return 0.f; });
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 1, 5, 6}));
}

TEST(PolicyUnified, LazyVariantIsALazyRule) {
  auto p = make("unified", {{"start_size", "1"}, {"separator_size", "1"}, {"heavy_size", "1"},
                            {"local_size", "2"}, {"separators", "99"}, {"update_interval", "2"},
                            {"scope", "shared"}});
  EXPECT_EQ(p->setup().use_rule, 1);
  EXPECT_EQ(p->setup().trigger, KVC_TRIGGER_OVER_CAPACITY);
  EXPECT_EQ(p->setup().rule.update_interval, 2);
  Cache c(1, 2);
  // Step 1 with 6 entries (one over capacity): FIFO; separator 3 is kept, the oldest
  // unprotected other middle entry (1) goes.
  c.fill(6, [](int64_t pos) { return pos == 3 ? 99 : 5; },
         [](int64_t, int64_t pos) { return pos == 2 ? 1.f : 0.f; });
  EXPECT_EQ(decide_keep(*p, c, 0, 6), (Pos{0, 2, 3, 4, 5}));
  // Step 2 (refresh): middle {2, 3, 4}; separator 3 is kept; the heavy hitter among {2, 4}
  // is 2 (score 1 in both heads), which becomes protected; 4 goes.
  append(c, 5);
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 2, 3, 5, 6}));
  append(c, 5);  // step 3: FIFO: 2 protected, 3 a separator, 5 goes
  EXPECT_EQ(decide_keep(*p, c), (Pos{0, 2, 3, 6, 7}));
}

}  // namespace
}  // namespace kvc
