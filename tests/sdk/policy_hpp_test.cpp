// Tests of kvc/policy.hpp and of the SDK template's keynorm policy, through the C descriptor
// exactly as the engine drives it, with hand-made cache views. Needs no engine.
#include <kvc/policy.hpp>

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

namespace {

// ---- A fake engine side -----------------------------------------------------------------------

struct FakeHost {
  std::string error;
  kvc_policy_host host{};
  FakeHost() {
    host.struct_size = sizeof host;
    host.host_data = this;
    host.n_layers = 2;
    host.n_heads = 2;
    host.vocab_size = 100;
    host.max_position_embeddings = 2048;
    host.set_error = [](void *self, const char *message) {
      static_cast<FakeHost *>(self)->error = message;
    };
    // "Tokenizer": one id per character.
    host.tokenize = [](void *, const char *text, int32_t *ids, size_t capacity) -> int64_t {
      const size_t n = std::strlen(text);
      for (size_t i = 0; i < n && i < capacity; ++i) ids[i] = static_cast<unsigned char>(text[i]);
      return static_cast<int64_t>(n);
    };
  }
};

// A cache of n_layers x n_heads heads with per-head key norms; positions = ranks.
struct FakeCache {
  int32_t n_layers, n_heads;
  std::vector<std::vector<float>> norms;  // per head
  std::vector<std::vector<int64_t>> positions;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<kvc_head_view> heads;
  kvc_cache_view view{};
  std::vector<int32_t> ranks;
  std::vector<int64_t> counts;
  kvc_plan plan{};

  FakeCache(int32_t layers, int32_t heads_per_layer, std::vector<std::vector<float>> key_norms)
      : n_layers(layers), n_heads(heads_per_layer), norms(std::move(key_norms)) {
    int64_t stride = 0;
    for (auto &h : norms) {
      positions.emplace_back(h.size());
      std::iota(positions.back().begin(), positions.back().end(), 0);
      tokens.emplace_back(h.size(), 7);
      stride = std::max<int64_t>(stride, static_cast<int64_t>(h.size()));
    }
    for (size_t i = 0; i < norms.size(); ++i) {
      kvc_head_view hv{};
      hv.n_entries = static_cast<int64_t>(norms[i].size());
      hv.positions = positions[i].data();
      hv.token_ids = tokens[i].data();
      hv.key_norms = norms[i].data();
      heads.push_back(hv);
    }
    view.struct_size = sizeof view;
    view.n_layers = n_layers;
    view.n_heads = n_heads;
    view.n_tokens_seen = stride;
    view.n_new = 1;
    view.heads = heads.data();
    ranks.assign(static_cast<size_t>(stride) * heads.size(), -1);
    counts.assign(heads.size(), -1);
    plan.struct_size = sizeof plan;
    plan.kind = KVC_PLAN_NOTHING;
    plan.ranks = ranks.data();
    plan.stride = stride;
    plan.counts = counts.data();
  }
  std::vector<int32_t> list(size_t h) const {
    return {ranks.begin() + static_cast<int64_t>(h) * plan.stride,
            ranks.begin() + static_cast<int64_t>(h) * plan.stride + counts[h]};
  }
};

std::vector<kvc_policy_value> int_values(std::initializer_list<int64_t> ints) {
  std::vector<kvc_policy_value> v;
  for (int64_t i : ints) {
    kvc_policy_value value{};
    value.i = i;
    v.push_back(value);
  }
  return v;
}

// ---- keynorm (the template), loaded as the engine loads it ------------------------------------

class KeyNormPlugin : public ::testing::Test {
 protected:
  void SetUp() override {
    handle_ = dlopen(KVC_TEST_KEYNORM_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(handle_, nullptr) << dlerror();
    auto entry = reinterpret_cast<kvc_policy_entry_fn>(dlsym(handle_, KVC_POLICY_ENTRY_SYMBOL));
    ASSERT_NE(entry, nullptr);
    d_ = entry(KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR);
    ASSERT_NE(d_, nullptr);
  }
  void TearDown() override {
    if (handle_) dlclose(handle_);
  }
  void *handle_ = nullptr;
  const kvc_policy_descriptor *d_ = nullptr;
  FakeHost host_;
};

TEST_F(KeyNormPlugin, DescriptorAndSchema) {
  EXPECT_EQ(d_->struct_size, sizeof(kvc_policy_descriptor));
  EXPECT_EQ(d_->abi_major, KVC_POLICY_ABI_MAJOR);
  EXPECT_STREQ(d_->name, "keynorm");
  EXPECT_STREQ(d_->version, "1.0.0");
  ASSERT_EQ(d_->n_params, 3u);
  EXPECT_STREQ(d_->params[0].name, "start_size");
  EXPECT_STREQ(d_->params[1].name, "recent_size");
  EXPECT_STREQ(d_->params[2].name, "budget");
  for (size_t i = 0; i < d_->n_params; ++i) {
    EXPECT_EQ(d_->params[i].struct_size, sizeof(kvc_param_info));
    EXPECT_EQ(d_->params[i].type, KVC_PARAM_INT);
    EXPECT_NE(d_->params[i].help, nullptr);
  }
  EXPECT_NE(d_->create, nullptr);
  EXPECT_NE(d_->destroy, nullptr);
  EXPECT_NE(d_->decide, nullptr);
  EXPECT_EQ(d_->reset, nullptr);  // keynorm keeps no per-text state
  EXPECT_EQ(d_->get_extension, nullptr);
}

TEST_F(KeyNormPlugin, KeepsSinksRecentAndSmallestNormsPerHead) {
  auto values = int_values({2, 3, 8});  // start 2, recent 3, budget 8: 3 low-norm slots
  kvc_policy_setup setup{};
  setup.struct_size = sizeof setup;
  void *instance = nullptr;
  ASSERT_EQ(d_->create(&host_.host, values.data(), &setup, &instance), 0) << host_.error;
  EXPECT_EQ(setup.signals, KVC_SIGNAL_KEY_NORM);
  EXPECT_EQ(setup.trigger, KVC_TRIGGER_OVER_CAPACITY);
  EXPECT_EQ(setup.trigger_size, 8);
  EXPECT_EQ(setup.capacity, 8);
  EXPECT_EQ(setup.use_rule, 0);

  // 12 entries per head; middle = ranks 2..8. Sinks and the recent window have the smallest
  // norms of all, to show they are not what the top-k picks from.
  FakeCache cache(2, 2, {
      //  0    1    2    3    4    5    6    7    8    9   10   11
      {0.1, 0.1, 5.0, 1.0, 6.0, 2.0, 7.0, 3.0, 8.0, 0.1, 0.1, 0.1},  // keeps 3, 5, 7
      {0.1, 0.1, 1.0, 9.0, 9.0, 9.0, 9.0, 2.0, 0.5, 0.1, 0.1, 0.1},  // keeps 2, 7, 8
      {0.1, 0.1, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 0.1, 0.1, 0.1},  // ties: oldest 2, 3, 4
      {0.1, 0.1, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 0.1, 0.1, 0.1},
  });
  cache.norms[3].resize(7);  // this head is under budget: must keep everything
  cache.heads[3].n_entries = 7;
  ASSERT_EQ(d_->decide(instance, &cache.view, &cache.plan), 0) << host_.error;
  EXPECT_EQ(cache.plan.kind, KVC_PLAN_KEEP);
  EXPECT_EQ(cache.plan.shared, 0);
  EXPECT_EQ(cache.list(0), (std::vector<int32_t>{0, 1, 3, 5, 7, 9, 10, 11}));
  EXPECT_EQ(cache.list(1), (std::vector<int32_t>{0, 1, 2, 7, 8, 9, 10, 11}));
  EXPECT_EQ(cache.list(2), (std::vector<int32_t>{0, 1, 2, 3, 4, 9, 10, 11}));
  EXPECT_EQ(cache.list(3), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6}));
  d_->destroy(instance);
}

TEST_F(KeyNormPlugin, BadBudgetIsReportedThroughTheHost) {
  auto values = int_values({4, 8, 10});
  kvc_policy_setup setup{};
  setup.struct_size = sizeof setup;
  void *instance = reinterpret_cast<void *>(1);
  EXPECT_NE(d_->create(&host_.host, values.data(), &setup, &instance), 0);
  EXPECT_EQ(instance, nullptr);
  EXPECT_EQ(host_.error,
            "keynorm: budget (10) must be at least start_size + recent_size (12)");
}

TEST_F(KeyNormPlugin, MissingSignalIsAnErrorNotACrash) {
  auto values = int_values({1, 1, 3});
  kvc_policy_setup setup{};
  setup.struct_size = sizeof setup;
  void *instance = nullptr;
  ASSERT_EQ(d_->create(&host_.host, values.data(), &setup, &instance), 0);
  FakeCache cache(1, 1, {{1, 2, 3, 4, 5}});
  cache.heads[0].key_norms = nullptr;  // an engine that forgot the requested signal
  EXPECT_NE(d_->decide(instance, &cache.view, &cache.plan), 0);
  EXPECT_NE(host_.error.find("KVC_SIGNAL_KEY_NORM"), std::string::npos) << host_.error;
  d_->destroy(instance);
}

// ---- The helpers on their own -----------------------------------------------------------------

constexpr kvc_param_info kSchema[] = {
    kvc::sdk::int_param("n", "3", 0, 100, "an int"),
    kvc::sdk::float_param("x", "0.5", 0, 1, "a float"),
    kvc::sdk::bool_param("flag", "true", "a bool"),
    kvc::sdk::choice_param("scope", "per_head", "per_head|shared", "a choice"),
    kvc::sdk::int_list_param("ids", "1,2", 0, 1000, "a list"),
    kvc::sdk::string_list_param("seps", ".", "strings"),
};

TEST(Params, TypedAccessByName) {
  const int64_t ids[] = {5, 300};
  const char *seps[] = {".", "\n"};
  const char *choice[] = {"shared"};
  std::vector<kvc_policy_value> v(6);
  v[0].i = 42;
  v[1].f = 0.25;
  v[2].i = 1;
  v[3].i = 1;
  v[3].strings = choice;
  v[3].n_strings = 1;
  v[4].ints = ids;
  v[4].n_ints = 2;
  v[5].strings = seps;
  v[5].n_strings = 2;
  const kvc::sdk::Params p(kSchema, 6, v.data());
  EXPECT_EQ(p.get<int>("n"), 42);
  EXPECT_EQ(p.get<int64_t>("n"), 42);
  EXPECT_DOUBLE_EQ(p.get<double>("x"), 0.25);
  EXPECT_TRUE(p.get<bool>("flag"));
  EXPECT_EQ(p.get<std::string>("scope"), "shared");
  EXPECT_EQ(p.get<std::string_view>("scope"), "shared");
  EXPECT_EQ(p.get_choice_index("scope"), 1);
  EXPECT_EQ(p.get<std::vector<int32_t>>("ids"), (std::vector<int32_t>{5, 300}));
  EXPECT_EQ(p.get<std::vector<std::string>>("seps"), (std::vector<std::string>{".", "\n"}));
  EXPECT_TRUE(p.has("ids"));
  EXPECT_FALSE(p.has("nope"));

  try {
    p.get<int>("nope");
    FAIL();
  } catch (const kvc::sdk::Error &e) {
    EXPECT_STREQ(e.what(),
                 "no parameter 'nope' in the policy's schema (it has: n, x, flag, scope, ids, "
                 "seps)");
  }
  try {
    p.get<double>("n");
    FAIL();
  } catch (const kvc::sdk::Error &e) {
    EXPECT_STREQ(e.what(), "parameter 'n' is declared as int, not read as float");
  }
  try {
    p.get<std::vector<uint8_t>>("ids");  // 300 does not fit
    FAIL();
  } catch (const kvc::sdk::Error &e) {
    EXPECT_NE(std::string(e.what()).find("item 300"), std::string::npos) << e.what();
  }
}

TEST(Host, CopiesServicesAndTokenizes) {
  FakeHost fake;
  const kvc::sdk::Host host(&fake.host);
  EXPECT_EQ(host.n_layers(), 2);
  EXPECT_TRUE(host.has_tokenizer());
  EXPECT_EQ(host.tokenize("ab"), (std::vector<int32_t>{'a', 'b'}));
  host.set_error("boom");
  EXPECT_EQ(fake.error, "boom");

  fake.host.tokenize = [](void *, const char *, int32_t *, size_t) -> int64_t { return -1; };
  const kvc::sdk::Host no_tokenizer(&fake.host);
  EXPECT_FALSE(no_tokenizer.has_tokenizer());
  EXPECT_THROW(no_tokenizer.tokenize("x"), kvc::sdk::Error);
}

TEST(Selection, TieBreakAndNaN) {
  kvc::sdk::Selection s;
  const float scores[] = {1, 3, 3, NAN, 3, 0, 2};
  s.reset(7);
  s.keep_first(1);
  s.keep_largest({scores, 7}, 3);  // 3, 3, 3 at ranks 1, 2, 4: all kept
  EXPECT_EQ(s.ranks(), (std::vector<int32_t>{0, 1, 2, 4}));
  s.reset(7);
  s.keep_largest({scores, 7}, 2);  // ties at 3: the older two
  EXPECT_EQ(s.ranks(), (std::vector<int32_t>{1, 2}));
  s.reset(7);
  s.keep_smallest({scores, 7}, 6);  // NaN comes last in both orders
  EXPECT_EQ(s.ranks(), (std::vector<int32_t>{0, 1, 2, 4, 5, 6}));
  s.reset(7);
  s.keep_last(10);  // more than there are
  EXPECT_EQ(s.n_kept(), 7);
  s.reset(3);
  EXPECT_THROW(s.keep_smallest({scores, 7}, 1), kvc::sdk::Error);
}

TEST(PlanWriter, ChecksWhatTheEngineWillCheck) {
  FakeCache cache(1, 2, {{1, 2, 3, 4}, {1, 2, 3, 4}});
  kvc::sdk::PlanWriter w(cache.plan, cache.view);
  const int32_t unsorted[] = {0, 2, 1};
  EXPECT_THROW(w.keep(0, 0, {unsorted, 3}), kvc::sdk::Error);
  const int32_t out_of_range[] = {0, 4};
  try {
    w.keep(0, 1, {out_of_range, 2});
    FAIL();
  } catch (const kvc::sdk::Error &e) {
    EXPECT_STREQ(e.what(),
                 "plan: keep rank 4 at index 1 for (layer 0, head 1) must be > 0 and < 4 "
                 "(ranks strictly increasing, inside the head's 4 entries)");
  }
  EXPECT_THROW(w.keep(1, 0, {}), kvc::sdk::Error);  // no layer 1

  kvc::sdk::PlanWriter w2(cache.plan, cache.view);
  const int32_t evict[] = {1};
  w2.evict(0, 1, {evict, 1});
  EXPECT_THROW(w2.keep(0, 0, {evict, 1}), kvc::sdk::Error);  // mixing kinds
  EXPECT_THROW(w2.evict(0, 1, {evict, 1}), kvc::sdk::Error);  // twice
  w2.finish();  // an evict plan needs no completion
  EXPECT_EQ(cache.plan.kind, KVC_PLAN_EVICT);
  EXPECT_EQ(cache.list(1), (std::vector<int32_t>{1}));

  kvc::sdk::PlanWriter w3(cache.plan, cache.view);
  const int32_t keep[] = {0, 3};
  w3.keep_shared({keep, 2});
  EXPECT_EQ(cache.plan.shared, 1);
  EXPECT_EQ(cache.list(0), (std::vector<int32_t>{0, 3}));
  EXPECT_THROW(w3.keep(0, 1, {keep, 2}), kvc::sdk::Error);  // per-head after shared
}

// A policy exercising the boundary: exceptions, the raw decide form, reset, extensions.
struct Thrower {
  static constexpr const char *name = "thrower";
  static constexpr const char *version = "0";
  static constexpr const char *description = "throws";
  static inline int resets = 0;
  Thrower(const kvc::sdk::Host &host, const kvc::sdk::Params &p, kvc_policy_setup &setup) {
    EXPECT_EQ(p.size(), 0u);
    EXPECT_EQ(host.n_heads(), 2);
    setup.trigger = KVC_TRIGGER_EVERY_STEP;
  }
  void decide(const kvc_cache_view &view, kvc_plan &plan) {
    if (view.n_new == 1) throw std::runtime_error("decide failed on purpose");
    if (view.n_new == 2) throw 42;
    plan.kind = KVC_PLAN_NOTHING;
  }
  void reset() { ++resets; }
  const void *get_extension(const char *id) {
    return std::strcmp(id, "kvc.test/1") == 0 ? this : nullptr;
  }
};

TEST(Plugin, ExceptionsBecomeErrorsAtTheBoundary) {
  const kvc_policy_descriptor *d = kvc::sdk::Plugin<Thrower>::descriptor(1, 0);
  EXPECT_EQ(d->n_params, 0u);
  EXPECT_EQ(d->params, nullptr);
  ASSERT_NE(d->reset, nullptr);
  ASSERT_NE(d->get_extension, nullptr);
  FakeHost host;
  kvc_policy_setup setup{};
  setup.struct_size = sizeof setup;
  void *instance = nullptr;
  ASSERT_EQ(d->create(&host.host, nullptr, &setup, &instance), 0) << host.error;
  EXPECT_EQ(setup.trigger, KVC_TRIGGER_EVERY_STEP);

  FakeCache cache(1, 1, {{1, 2}});
  EXPECT_NE(d->decide(instance, &cache.view, &cache.plan), 0);
  EXPECT_EQ(host.error, "decide failed on purpose");
  cache.view.n_new = 2;
  EXPECT_NE(d->decide(instance, &cache.view, &cache.plan), 0);
  EXPECT_EQ(host.error, "unknown C++ exception in the policy");
  cache.view.n_new = 3;
  EXPECT_EQ(d->decide(instance, &cache.view, &cache.plan), 0);
  EXPECT_EQ(d->reset(instance), 0);
  EXPECT_EQ(Thrower::resets, 1);
  EXPECT_EQ(d->get_extension(instance, "kvc.test/1"), d->get_extension(instance, "kvc.test/1"));
  EXPECT_NE(d->get_extension(instance, "kvc.test/1"), nullptr);
  EXPECT_EQ(d->get_extension(instance, "kvc.other/1"), nullptr);
  d->destroy(instance);
}

// A rule-only policy has no decide entry.
struct RuleOnly {
  static constexpr const char *name = "rule_only";
  static constexpr const char *version = "0";
  static constexpr const char *description = "a rule";
  RuleOnly(const kvc::sdk::Host &, const kvc::sdk::Params &, kvc_policy_setup &setup) {
    setup.use_rule = 1;
  }
};

TEST(Plugin, RuleOnlyPolicyHasNoDecide) {
  const kvc_policy_descriptor *d = kvc::sdk::Plugin<RuleOnly>::descriptor(1, 0);
  EXPECT_EQ(d->decide, nullptr);
  EXPECT_EQ(d->reset, nullptr);
}

}  // namespace
