// The CUDA backend's switches (core/cuda/cuda_options.h, docs/cuda.md "Switches") against its
// default path, on the GPU, through the public C ABI. Every switch is off by default because
// it has never run on a GPU; these tests are what the first GPU run checks before any of them
// is turned on. They need a CUDA device and skip (naming the reason) without one.
//
// The switches are read when a session starts, so each session is created under its own
// environment (ScopedEnv) and the two runs compared are two sessions of one model:
//   KVC_CUDA_RULES=device          exactly the host rule's decisions: the same signals decide,
//                                  so per-token NLLs, keep sets and ranking scores are equal
//                                  bit for bit (kvc_session_score steps one token at a time,
//                                  where the attention kernel's signal sums are deterministic);
//   KVC_CUDA_SIGNAL_FETCH=live     exactly the same values, gathered on the device: equal;
//   KVC_CUDA_GRAPHS=1              the same kernels replayed from a graph; cuBLAS then runs
//                                  with an explicit workspace, which may pick another GEMM
//                                  algorithm: within kSwitchLogit / kSwitchNll;
//   KVC_CUDA_DECODE_ATTENTION=splitk   another summation order of the softmax: within the
//                                  same tolerances, signals within kSwitchSignal.
// Keep sets under the inexact switches: identical for unscored policies, at most
// kScoreKeepMismatch differing for scored ones (as the CPU/GPU parity).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"

namespace kvc::cudatest {
namespace {

// Set before any GPU run; a fraction of the CPU/GPU parity tolerances (kF16Logit 3e-2, ...).
constexpr float kSwitchLogitF16 = 1e-2f, kSwitchLogitBf16 = 5e-2f;
constexpr float kSwitchNllF16 = 5e-3f, kSwitchNllBf16 = 3e-2f;
constexpr float kSwitchSignal = 1e-3f;  // accumulated/window attention, cosines
// The fixtures have no tokenizer: SepLLM's separators as token ids (vocabulary of 128, so the
// random texts hold several).
constexpr double kScoreKeepMismatch = 0.02;

#define REQUIRE_GPU()                                                   \
  do {                                                                  \
    static const std::string why = cuda_unavailable_reason();           \
    if (!why.empty()) GTEST_SKIP() << why;  /* "no CUDA driver: ..." */ \
  } while (0)

using Env = std::vector<std::pair<const char*, const char*>>;

const char* const kSwitchVars[] = {"KVC_CUDA_RULES", "KVC_CUDA_SIGNAL_FETCH", "KVC_CUDA_GRAPHS",
                                   "KVC_CUDA_DECODE_ATTENTION", "KVC_CUDA_SPLITK_MIN_KEYS"};

// Sets `env` (every other switch unset) for its lifetime, then restores the caller's values.
class ScopedEnv {
 public:
  explicit ScopedEnv(const Env& env) {
    for (const char* name : kSwitchVars) {
      const char* v = std::getenv(name);
      saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
      unsetenv(name);
    }
    for (const auto& [name, value] : env) setenv(name, value, 1);
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value)
        setenv(name.c_str(), value->c_str(), 1);
      else
        unsetenv(name.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

std::string describe(const Env& env) {
  std::string s;
  for (const auto& [name, value] : env) s += std::string(s.empty() ? "" : " ") + name + "=" + value;
  return s.empty() ? "defaults" : s;
}

SessionPtr session(kvc_model* m, kvc_position_mode mode, const Env& env,
                   const char* policy = nullptr, const std::vector<kvc_param>& params = {}) {
  ScopedEnv scoped(env);  // the switches are read when the session starts
  return open_session(m, mode, policy, params, describe(env));
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.0f : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (std::isnan(d) && !(std::isnan(a[i]) && std::isnan(b[i]))) return INFINITY;
    if (!std::isnan(d)) m = std::max(m, d);
  }
  return m;
}

// What one scored run leaves: per-token NLLs, the kept positions and the ranking scores of
// every (layer, head), the eviction count.
struct SwitchRun {
  std::vector<float> nll;
  std::vector<std::vector<int64_t>> kept;
  std::vector<std::vector<float>> scores;  // empty where the policy ranks by no signal
  int64_t evictions = -1;
};

SwitchRun score_run(kvc_model* m, kvc_position_mode mode, const Env& env, const PolicyCase& pc,
              const std::vector<int32_t>& t) {
  SwitchRun run;
  auto s = session(m, mode, env, pc.policy, pc.params);
  if (!s) return run;
  run.nll.resize(t.size() - 1);
  EXPECT_EQ(kvc_session_score(s.get(), t.data(), t.size(), nullptr, run.nll.data(),
                              run.nll.size()),
            KVC_OK)
      << describe(env) << ": " << kvc_last_error();
  kvc_model_info info;
  kvc_model_info_init(&info);
  kvc_model_get_info(m, &info);
  for (int l = 0; l < info.n_layers; ++l)
    for (int h = 0; h < info.n_heads; ++h) {
      std::vector<int64_t> pos(t.size());
      size_t n = 0;
      EXPECT_EQ(kvc_session_cache_entries(s.get(), l, h, pos.data(), nullptr, pos.size(), &n),
                KVC_OK);
      pos.resize(n);
      run.kept.push_back(pos);
      std::vector<float> sc(t.size());
      if (kvc_session_cache_scores(s.get(), l, h, sc.data(), sc.size(), &n) == KVC_OK) {
        sc.resize(n);
        run.scores.push_back(sc);
      }
    }
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  if (kvc_session_cache_stats(s.get(), &st) == KVC_OK) run.evictions = st.n_evictions;
  return run;
}

// Bit-for-bit equality of two runs (device rules, live fetch).
void expect_identical(const SwitchRun& a, const SwitchRun& b) {
  EXPECT_EQ(max_abs_diff(a.nll, b.nll), 0.0f) << "per-token NLL";
  ASSERT_EQ(a.kept.size(), b.kept.size());
  for (size_t i = 0; i < a.kept.size(); ++i)
    EXPECT_EQ(a.kept[i], b.kept[i]) << "kept positions of (layer, head) #" << i;
  ASSERT_EQ(a.scores.size(), b.scores.size());
  for (size_t i = 0; i < a.scores.size(); ++i)
    EXPECT_EQ(max_abs_diff(a.scores[i], b.scores[i]), 0.0f) << "scores of (layer, head) #" << i;
  EXPECT_EQ(a.evictions, b.evictions);
}

// Within the switch tolerances (graphs, split-K).
void expect_close(const SwitchRun& a, const SwitchRun& b, bool scored, float nll_tol) {
  EXPECT_LE(max_abs_diff(a.nll, b.nll), nll_tol) << "per-token NLL";
  ASSERT_EQ(a.kept.size(), b.kept.size());
  int64_t total = 0, differing = 0;
  for (size_t i = 0; i < a.kept.size(); ++i) {
    EXPECT_EQ(a.kept[i].size(), b.kept[i].size()) << "(layer, head) #" << i;
    std::vector<int64_t> common;
    std::set_intersection(a.kept[i].begin(), a.kept[i].end(), b.kept[i].begin(),
                          b.kept[i].end(), std::back_inserter(common));
    total += static_cast<int64_t>(a.kept[i].size());
    differing += static_cast<int64_t>(a.kept[i].size() - common.size());
  }
  if (scored)
    EXPECT_LE(static_cast<double>(differing), kScoreKeepMismatch * static_cast<double>(total));
  else
    EXPECT_EQ(differing, 0);
}

struct Model {
  ModelPtr m;
  int vocab = 0;
  float logit_tol = 0, nll_tol = 0;
};

Model load_gpu(const std::string& name, kvc_dtype dtype) {
  Model g;
  EXPECT_EQ(load(fixture_model(name), KVC_BACKEND_CUDA, dtype, &g.m), KVC_OK) << kvc_last_error();
  if (!g.m) return g;
  EXPECT_EQ(backend_of(g.m.get()), KVC_BACKEND_CUDA);
  kvc_model_info info;
  kvc_model_info_init(&info);
  kvc_model_get_info(g.m.get(), &info);
  g.vocab = info.vocab_size;
  g.logit_tol = dtype == KVC_DTYPE_BF16 ? kSwitchLogitBf16 : kSwitchLogitF16;
  g.nll_tol = dtype == KVC_DTYPE_BF16 ? kSwitchNllBf16 : kSwitchNllF16;
  return g;
}

// Prefill 5, then one token at a time with the last logits, a manual eviction half way (the
// tables re-sent between two graph launches): every step's logits.
std::vector<float> decode_logits(kvc_model* m, kvc_position_mode mode, const Env& env,
                                 const std::vector<int32_t>& t, int vocab) {
  auto s = session(m, mode, env);
  const size_t v = static_cast<size_t>(vocab);
  std::vector<float> logits(t.size() * v, 0.0f);
  if (!s) return logits;
  EXPECT_EQ(kvc_session_step(s.get(), t.data(), 5, KVC_LOGITS_NONE, nullptr, 0), KVC_OK);
  for (size_t i = 5; i < t.size(); ++i) {
    if (i == t.size() / 2) {
      const int32_t keep[] = {0, 1, 3, 4, 6};
      EXPECT_EQ(kvc_session_keep(s.get(), -1, -1, keep, 5), KVC_OK) << kvc_last_error();
    }
    EXPECT_EQ(kvc_session_step(s.get(), &t[i], 1, KVC_LOGITS_LAST, &logits[i * v], v), KVC_OK)
        << describe(env) << ": " << kvc_last_error();
  }
  return logits;
}

class GpuSwitches : public ::testing::TestWithParam<std::tuple<const char*, kvc_dtype>> {};

const Env kDefaults = {};
const Env kDeviceRules = {{"KVC_CUDA_RULES", "device"}};
const Env kLiveFetch = {{"KVC_CUDA_SIGNAL_FETCH", "live"}};
const Env kGraphs = {{"KVC_CUDA_GRAPHS", "1"}};
// 16 keys per split at least (the smallest allowed): the fixtures' short caches split.
const Env kSplitK = {{"KVC_CUDA_DECODE_ATTENTION", "splitk"}, {"KVC_CUDA_SPLITK_MIN_KEYS", "16"}};
const Env kAllOn = {{"KVC_CUDA_RULES", "device"},
                    {"KVC_CUDA_SIGNAL_FETCH", "live"},
                    {"KVC_CUDA_GRAPHS", "1"},
                    {"KVC_CUDA_DECODE_ATTENTION", "splitk"},
                    {"KVC_CUDA_SPLITK_MIN_KEYS", "16"}};

// KVC_CUDA_RULES=device: every rule family decided on the device, token for token the host
// rule's decisions, in both position modes.
TEST_P(GpuSwitches, DeviceRulesEqualHostRules) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Model g = load_gpu(name, dtype);
  ASSERT_TRUE(g.m);
  const auto t = random_tokens(g.vocab, 64, 3);
  for (const auto& pc : evicting_policy_cases())
    for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL}) {
      SCOPED_TRACE(std::string(pc.label) + (mode == KVC_POSITIONS_SHIFT ? " shift" : " original"));
      const SwitchRun host = score_run(g.m.get(), mode, kDefaults, pc, t);
      const SwitchRun device = score_run(g.m.get(), mode, kDeviceRules, pc, t);
      EXPECT_GT(host.evictions, 0) << "the case must evict to test anything";
      expect_identical(host, device);
    }
}

// KVC_CUDA_SIGNAL_FETCH=live: the live entries gathered on the device give the same values.
TEST_P(GpuSwitches, LiveSignalFetchEqualsFullFetch) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Model g = load_gpu(name, dtype);
  ASSERT_TRUE(g.m);
  const auto t = random_tokens(g.vocab, 64, 4);
  for (const auto& pc : evicting_policy_cases()) {
    SCOPED_TRACE(pc.label);
    expect_identical(score_run(g.m.get(), KVC_POSITIONS_SHIFT, kDefaults, pc, t),
                     score_run(g.m.get(), KVC_POSITIONS_SHIFT, kLiveFetch, pc, t));
  }
}

// KVC_CUDA_GRAPHS=1: decode logits (graph launches with a manual eviction between them) and
// scored runs of every rule family.
TEST_P(GpuSwitches, GraphsEqualNoGraphs) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Model g = load_gpu(name, dtype);
  ASSERT_TRUE(g.m);
  const auto t = random_tokens(g.vocab, 48, 5);
  for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL}) {
    const auto off = decode_logits(g.m.get(), mode, kDefaults, t, g.vocab);
    const auto on = decode_logits(g.m.get(), mode, kGraphs, t, g.vocab);
    EXPECT_LE(max_abs_diff(off, on), g.logit_tol) << "positions mode " << mode;
    EXPECT_GT(max_abs_diff(on, std::vector<float>(on.size(), 0.0f)), 0.0f)
        << "the graph path delivered no logits";
  }
  const auto s = random_tokens(g.vocab, 64, 6);
  for (const auto& pc : evicting_policy_cases()) {
    SCOPED_TRACE(pc.label);
    expect_close(score_run(g.m.get(), KVC_POSITIONS_SHIFT, kDefaults, pc, s),
                 score_run(g.m.get(), KVC_POSITIONS_SHIFT, kGraphs, pc, s), pc.scored, g.nll_tol);
  }
}

// KVC_CUDA_DECODE_ATTENTION=splitk: decode logits, scored runs, and the signals it writes
// (accumulated, last and windowed attention, pivotal flags) against the one-block kernel.
TEST_P(GpuSwitches, SplitKEqualsBlockAttention) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Model g = load_gpu(name, dtype);
  ASSERT_TRUE(g.m);
  const auto t = random_tokens(g.vocab, 96, 7);
  for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL})
    EXPECT_LE(max_abs_diff(decode_logits(g.m.get(), mode, kDefaults, t, g.vocab),
                           decode_logits(g.m.get(), mode, kSplitK, t, g.vocab)),
              g.logit_tol)
        << "positions mode " << mode;
  for (const auto& pc : evicting_policy_cases()) {
    SCOPED_TRACE(pc.label);
    expect_close(score_run(g.m.get(), KVC_POSITIONS_SHIFT, kDefaults, pc, t),
                 score_run(g.m.get(), KVC_POSITIONS_SHIFT, kSplitK, pc, t), pc.scored, g.nll_tol);
  }
  // Signals over a cache that never evicts (every entry compared, rank for rank).
  const std::vector<PolicyCase> signals = {
      {"acc", "h2o", {{"heavy_size", "1000"}}, true},
      {"last", "tova", {{"budget", "1000"}}, true},
      {"window", "snapkv", {{"window", "6"}, {"heavy_size", "1000"}, {"kernel_size", "1"}}, true},
  };
  for (const auto& pc : signals) {
    SCOPED_TRACE(pc.label);
    const SwitchRun a = score_run(g.m.get(), KVC_POSITIONS_SHIFT, kDefaults, pc, t);
    const SwitchRun b = score_run(g.m.get(), KVC_POSITIONS_SHIFT, kSplitK, pc, t);
    ASSERT_EQ(a.scores.size(), b.scores.size());
    ASSERT_FALSE(a.scores.empty());
    for (size_t i = 0; i < a.scores.size(); ++i)
      EXPECT_LE(max_abs_diff(a.scores[i], b.scores[i]), kSwitchSignal) << "(layer, head) #" << i;
  }
}

// Every switch on at once against the defaults (the configuration a fast run would use).
TEST_P(GpuSwitches, AllSwitchesTogether) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Model g = load_gpu(name, dtype);
  ASSERT_TRUE(g.m);
  const auto t = random_tokens(g.vocab, 80, 8);
  for (const auto& pc : evicting_policy_cases()) {
    SCOPED_TRACE(pc.label);
    expect_close(score_run(g.m.get(), KVC_POSITIONS_ORIGINAL, kDefaults, pc, t),
                 score_run(g.m.get(), KVC_POSITIONS_ORIGINAL, kAllOn, pc, t), pc.scored,
                 g.nll_tol);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, GpuSwitches,
    ::testing::Values(std::make_tuple("neox-par-r25", KVC_DTYPE_F16),
                      std::make_tuple("neox-peaked", KVC_DTYPE_F16),
                      std::make_tuple("neox-hd40", KVC_DTYPE_BF16)),
    [](const auto& info) { return param_name(std::get<0>(info.param), std::get<1>(info.param)); });

// A bad value of a switch fails the session's creation and names the variable.
TEST(GpuSwitchValues, BadValueFailsSessionCreation) {
  REQUIRE_GPU();
  Model g = load_gpu("neox-par-r25", KVC_DTYPE_F16);
  ASSERT_TRUE(g.m);
  ScopedEnv env(Env{{"KVC_CUDA_RULES", "gpu"}});
  kvc_session_options o;
  kvc_session_options_init(&o);
  kvc_session* s = nullptr;
  EXPECT_EQ(kvc_session_create(g.m.get(), &o, &s), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvc_last_error()).find("KVC_CUDA_RULES='gpu' is not one of host|device"),
            std::string::npos)
      << kvc_last_error();
  kvc_session_free(s);
}

}  // namespace
}  // namespace kvc::cudatest
