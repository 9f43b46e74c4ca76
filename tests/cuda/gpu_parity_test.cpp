// CPU/GPU parity through the public C ABI. Every test here needs a CUDA device and skips
// (naming the reason) without one.
//
// Reference: the CPU backend with the SAME 16-bit weights (fp32 compute), so that what is
// measured is the GPU's own rounding: activations rounded to fp16/bf16 at GEMM inputs and keys
// and values stored in 16 bits, with fp32 accumulation everywhere.
// Tolerances (max |Δ| over all logits / per-token NLLs; set before any GPU run, see
// docs/cuda.md): float16 kF16Logit / kF16Nll, bfloat16 kBf16Logit / kBf16Nll.
// Keep sets: identical for policies without scores (baseline, streaming, sepllm); for
// score-based ones at most kScoreKeepMismatch of the entries may differ (near-ties of fp32
// scores summed in another order).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.h"

namespace kvc::cudatest {
namespace {

constexpr float kF16Logit = 3e-2f, kF16Nll = 2e-2f;
constexpr float kBf16Logit = 1.5e-1f, kBf16Nll = 1e-1f;
// The fixtures have no tokenizer: SepLLM's separators as token ids (vocabulary of 128, so the
// random texts hold several).
constexpr double kScoreKeepMismatch = 0.02;

const char* const kModels[] = {"neox-par-r25", "neox-seq-r100", "neox-hd40",   "neox-sharded",
                               "neox-f16",     "neox-bf16",     "neox-peaked"};

#define REQUIRE_GPU()                                                   \
  do {                                                                  \
    static const std::string why = cuda_unavailable_reason();           \
    if (!why.empty()) GTEST_SKIP() << why;  /* "...: no CUDA device: ..." */ \
  } while (0)

struct Pair {
  ModelPtr cpu, gpu;
  int vocab = 0;
  float logit_tol = 0, nll_tol = 0;
};

Pair load_pair(const std::string& name, kvc_dtype dtype) {
  Pair p;
  EXPECT_EQ(load(fixture_model(name), KVC_BACKEND_CPU, dtype, &p.cpu), KVC_OK) << kvc_last_error();
  EXPECT_EQ(load(fixture_model(name), KVC_BACKEND_CUDA, dtype, &p.gpu), KVC_OK) << kvc_last_error();
  if (p.gpu) {
    EXPECT_EQ(backend_of(p.gpu.get()), KVC_BACKEND_CUDA);
  }
  kvc_model_info info;
  kvc_model_info_init(&info);
  if (p.cpu) kvc_model_get_info(p.cpu.get(), &info);
  p.vocab = info.vocab_size;
  p.logit_tol = dtype == KVC_DTYPE_BF16 ? kBf16Logit : kF16Logit;
  p.nll_tol = dtype == KVC_DTYPE_BF16 ? kBf16Nll : kF16Nll;
  return p;
}

SessionPtr session(kvc_model* m, kvc_position_mode mode, const char* policy = nullptr,
                   const std::vector<kvc_param>& params = {}) {
  return open_session(m, mode, policy, params);
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<float> prefill(kvc_model* m, const std::vector<int32_t>& t, int vocab) {
  auto s = session(m, KVC_POSITIONS_SHIFT);
  std::vector<float> logits(t.size() * static_cast<size_t>(vocab));
  EXPECT_EQ(kvc_session_step(s.get(), t.data(), t.size(), KVC_LOGITS_ALL, logits.data(),
                             logits.size()),
            KVC_OK)
      << kvc_last_error();
  return logits;
}

std::vector<float> decode(kvc_model* m, const std::vector<int32_t>& t, int vocab,
                          kvc_position_mode mode) {
  auto s = session(m, mode);
  const size_t v = static_cast<size_t>(vocab);
  std::vector<float> logits(t.size() * v);
  // A prefill of 5, then one token at a time; a manual eviction half way exercises the
  // re-sent tables.
  EXPECT_EQ(kvc_session_step(s.get(), t.data(), 5, KVC_LOGITS_NONE, nullptr, 0), KVC_OK);
  for (size_t i = 5; i < t.size(); ++i) {
    if (i == t.size() / 2) {
      const int32_t keep[] = {0, 1, 3, 4, 6};
      EXPECT_EQ(kvc_session_keep(s.get(), -1, -1, keep, 5), KVC_OK) << kvc_last_error();
    }
    EXPECT_EQ(kvc_session_step(s.get(), &t[i], 1, KVC_LOGITS_LAST, &logits[i * v], v), KVC_OK)
        << kvc_last_error();
  }
  return logits;
}

class GpuParity : public ::testing::TestWithParam<std::tuple<const char*, kvc_dtype>> {};

TEST_P(GpuParity, PrefillLogits) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Pair p = load_pair(name, dtype);
  ASSERT_TRUE(p.cpu && p.gpu);
  const auto t = random_tokens(p.vocab, 40, 1);
  EXPECT_LE(max_abs_diff(prefill(p.cpu.get(), t, p.vocab), prefill(p.gpu.get(), t, p.vocab)),
            p.logit_tol);
}

TEST_P(GpuParity, DecodeLogitsInBothPositionModes) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Pair p = load_pair(name, dtype);
  ASSERT_TRUE(p.cpu && p.gpu);
  const auto t = random_tokens(p.vocab, 32, 2);
  for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL})
    EXPECT_LE(max_abs_diff(decode(p.cpu.get(), t, p.vocab, mode),
                           decode(p.gpu.get(), t, p.vocab, mode)),
              p.logit_tol)
        << "positions mode " << mode;
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, GpuParity,
    ::testing::Combine(::testing::ValuesIn(kModels),
                       ::testing::Values(KVC_DTYPE_F16, KVC_DTYPE_BF16)),
    [](const auto& info) { return param_name(std::get<0>(info.param), std::get<1>(info.param)); });

// The full cache, then every evicting policy (cuda_test_util.h).
std::vector<PolicyCase> policy_cases() {
  std::vector<PolicyCase> cases = {{"baseline", "baseline", {}, false}};
  for (auto& c : evicting_policy_cases()) cases.push_back(std::move(c));
  return cases;
}

class GpuPolicyParity : public ::testing::TestWithParam<std::tuple<const char*, kvc_dtype>> {};

TEST_P(GpuPolicyParity, PerTokenNllAndKeepSetsOfEveryPolicy) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Pair p = load_pair(name, dtype);
  ASSERT_TRUE(p.cpu && p.gpu);
  kvc_model_info info;
  kvc_model_info_init(&info);
  kvc_model_get_info(p.cpu.get(), &info);
  const auto t = random_tokens(p.vocab, 64, 3);
  for (const auto& pc : policy_cases()) {
    for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL}) {
      SCOPED_TRACE(std::string(pc.label) + (mode == KVC_POSITIONS_SHIFT ? " shift" : " original"));
      auto sc = session(p.cpu.get(), mode, pc.policy, pc.params);
      auto sg = session(p.gpu.get(), mode, pc.policy, pc.params);
      ASSERT_TRUE(sc && sg);
      std::vector<float> nc(t.size() - 1), ng(t.size() - 1);
      ASSERT_EQ(kvc_session_score(sc.get(), t.data(), t.size(), nullptr, nc.data(), nc.size()),
                KVC_OK)
          << kvc_last_error();
      ASSERT_EQ(kvc_session_score(sg.get(), t.data(), t.size(), nullptr, ng.data(), ng.size()),
                KVC_OK)
          << kvc_last_error();
      EXPECT_LE(max_abs_diff(nc, ng), p.nll_tol);
      int64_t total = 0, differing = 0;
      for (int l = 0; l < info.n_layers; ++l)
        for (int h = 0; h < info.n_heads; ++h) {
          std::vector<int64_t> pc_pos(t.size()), pg_pos(t.size());
          size_t nc_n = 0, ng_n = 0;
          ASSERT_EQ(kvc_session_cache_entries(sc.get(), l, h, pc_pos.data(), nullptr,
                                              pc_pos.size(), &nc_n),
                    KVC_OK);
          ASSERT_EQ(kvc_session_cache_entries(sg.get(), l, h, pg_pos.data(), nullptr,
                                              pg_pos.size(), &ng_n),
                    KVC_OK);
          ASSERT_EQ(nc_n, ng_n) << "layer " << l << " head " << h;
          pc_pos.resize(nc_n);
          pg_pos.resize(ng_n);
          std::vector<int64_t> common;
          std::set_intersection(pc_pos.begin(), pc_pos.end(), pg_pos.begin(), pg_pos.end(),
                                std::back_inserter(common));
          total += static_cast<int64_t>(nc_n);
          differing += static_cast<int64_t>(nc_n - common.size());
        }
      if (pc.scored)
        EXPECT_LE(static_cast<double>(differing), kScoreKeepMismatch * static_cast<double>(total));
      else
        EXPECT_EQ(differing, 0);
    }
  }
}

// The signals computed when a policy decides, CPU vs GPU, read through
// kvc_session_cache_scores after a prefill, decode steps and a manual eviction (policies set
// never to evict). Tolerances are estimates like the others: probabilities and cosines move by
// the 16-bit rounding of keys and activations; a pivotal count may flip where a probability
// sits at the uniform threshold.
constexpr float kSignalTolerance = 2e-2f;
constexpr double kPivotalMismatch = 0.05;

TEST_P(GpuPolicyParity, DerivedSignals) {
  REQUIRE_GPU();
  const auto [name, dtype] = GetParam();
  Pair p = load_pair(name, dtype);
  ASSERT_TRUE(p.cpu && p.gpu);
  kvc_model_info info;
  kvc_model_info_init(&info);
  kvc_model_get_info(p.cpu.get(), &info);
  const auto t = random_tokens(p.vocab, 40, 5);
  struct Case {
    const char* policy;
    std::vector<kvc_param> params;
    bool count;
  };
  const std::vector<Case> cases = {
      {"snapkv", {{"window", "6"}, {"heavy_size", "1000"}, {"kernel_size", "1"}}, false},
      {"scissorhands", {{"history", "6"}, {"heavy_size", "1000"}}, true},
      {"keydiff", {{"heavy_size", "1000"}}, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.policy);
    auto sc = session(p.cpu.get(), KVC_POSITIONS_SHIFT, c.policy, c.params);
    auto sg = session(p.gpu.get(), KVC_POSITIONS_SHIFT, c.policy, c.params);
    ASSERT_TRUE(sc && sg);
    for (auto* s : {sc.get(), sg.get()}) {
      ASSERT_EQ(kvc_session_step(s, t.data(), 12, KVC_LOGITS_NONE, nullptr, 0), KVC_OK);
      for (size_t i = 12; i < t.size(); ++i) {
        if (i == 25) {
          const int32_t keep[] = {0, 2, 3, 7, 11, 12, 13, 20};
          ASSERT_EQ(kvc_session_keep(s, -1, -1, keep, 8), KVC_OK) << kvc_last_error();
        }
        ASSERT_EQ(kvc_session_step(s, &t[i], 1, KVC_LOGITS_NONE, nullptr, 0), KVC_OK)
            << kvc_last_error();
      }
    }
    int64_t total = 0, differing = 0;
    for (int l = 0; l < info.n_layers; ++l)
      for (int h = 0; h < info.n_heads; ++h) {
        std::vector<float> vc(t.size()), vg(t.size());
        size_t nc = 0, ng = 0;
        ASSERT_EQ(kvc_session_cache_scores(sc.get(), l, h, vc.data(), vc.size(), &nc), KVC_OK)
            << kvc_last_error();
        ASSERT_EQ(kvc_session_cache_scores(sg.get(), l, h, vg.data(), vg.size(), &ng), KVC_OK)
            << kvc_last_error();
        ASSERT_EQ(nc, ng);
        vc.resize(nc);
        vg.resize(ng);
        total += static_cast<int64_t>(nc);
        if (c.count) {
          for (size_t r = 0; r < nc; ++r) differing += vc[r] != vg[r];
        } else {
          EXPECT_LE(max_abs_diff(vc, vg), kSignalTolerance) << "layer " << l << " head " << h;
        }
      }
    if (c.count) {
      EXPECT_LE(static_cast<double>(differing), kPivotalMismatch * static_cast<double>(total));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, GpuPolicyParity,
    ::testing::Combine(::testing::Values("neox-par-r25", "neox-seq-r100", "neox-peaked"),
                       ::testing::Values(KVC_DTYPE_F16, KVC_DTYPE_BF16)),
    [](const auto& info) { return param_name(std::get<0>(info.param), std::get<1>(info.param)); });

}  // namespace
}  // namespace kvc::cudatest
