// Determinism of the CPU backend: the same run twice gives bit-identical NLLs, and so do runs
// with 1, 2 or 3 worker threads. Why the thread count cannot matter: every matmul output is one
// dot product summed by one thread in a fixed order (core/src/cpu/matmul.h), attention is
// split by head (each head computed whole by one thread), and policy signals are summed in a
// fixed order. The documented tolerance across thread counts is therefore zero (bit-identical);
// docs/hardening.md records the measurement. Results may differ between SIMD targets (AVX2 vs
// AVX-512), which is why the golden tests elsewhere use a tolerance.
#include <cmath>

#include "stress_util.h"

namespace kvc::stress {
namespace {

TEST(Determinism, SameRunTwiceIsBitIdentical) {
  ModelPtr model = load_model(2);
  ASSERT_TRUE(model);
  const std::vector<int32_t> tokens = text_tokens(model.get());
  for (const Config& c : configs()) {
    SCOPED_TRACE(c.name);
    SessionPtr first = make_session(model.get(), c);
    ASSERT_TRUE(first);
    const std::vector<float> a = score(first.get(), tokens);
    // A fresh session, and the first one again after a reset: both must repeat it exactly.
    SessionPtr second = make_session(model.get(), c);
    const std::vector<float> b = score(second.get(), tokens);
    ASSERT_EQ(kvc_session_reset(first.get()), KVC_OK) << kvc_last_error();
    const std::vector<float> a2 = score(first.get(), tokens);
    EXPECT_TRUE(bit_identical(a, b)) << "max |diff| " << max_abs_diff(a, b);
    EXPECT_TRUE(bit_identical(a, a2)) << "after reset, max |diff| " << max_abs_diff(a, a2);
    for (float v : a) ASSERT_TRUE(std::isfinite(v) && v >= 0.0f) << v;
  }
}

TEST(Determinism, PolicyEvictsInThisText) {
  // Guards the other tests' value: with these budgets every policy except the full cache
  // actually evicts, so eviction decisions are part of what must be reproducible.
  ModelPtr model = load_model(2);
  ASSERT_TRUE(model);
  const std::vector<int32_t> tokens = text_tokens(model.get());
  for (const Config& c : configs()) {
    if (c.policy == nullptr) continue;
    SCOPED_TRACE(c.name);
    SessionPtr s = make_session(model.get(), c);
    ASSERT_TRUE(s);
    score(s.get(), tokens);
    kvc_cache_stats st;
    kvc_cache_stats_init(&st);
    ASSERT_EQ(kvc_session_cache_stats(s.get(), &st), KVC_OK) << kvc_last_error();
    EXPECT_GT(st.n_evictions, 0);
    EXPECT_LT(st.max_entries_now, static_cast<int64_t>(tokens.size()));
  }
}

TEST(Determinism, ThreadCountDoesNotChangeResults) {
  const int kThreads[] = {1, 2, 3};
  std::vector<std::vector<std::vector<float>>> nll;  // [thread count][config]
  std::vector<std::vector<float>> logits;            // prefill logits of every token
  std::vector<int32_t> tokens;
  for (int threads : kThreads) {
    ModelPtr model = load_model(threads);
    ASSERT_TRUE(model);
    if (tokens.empty()) tokens = text_tokens(model.get());
    nll.emplace_back();
    for (const Config& c : configs()) {
      SessionPtr s = make_session(model.get(), c);
      ASSERT_TRUE(s);
      nll.back().push_back(score(s.get(), tokens));
    }
    // A batched prefill (the multi-token matmul path) as well.
    kvc_model_info info;
    kvc_model_info_init(&info);
    ASSERT_EQ(kvc_model_get_info(model.get(), &info), KVC_OK);
    EXPECT_EQ(info.n_threads, threads);
    SessionPtr s = make_session(model.get(), configs()[0]);
    std::vector<float> out(tokens.size() * static_cast<size_t>(info.vocab_size));
    ASSERT_EQ(kvc_session_step(s.get(), tokens.data(), tokens.size(), KVC_LOGITS_ALL, out.data(),
                               out.size()),
              KVC_OK)
        << kvc_last_error();
    logits.push_back(std::move(out));
  }
  for (size_t t = 1; t < nll.size(); ++t) {
    for (size_t c = 0; c < configs().size(); ++c) {
      EXPECT_TRUE(bit_identical(nll[0][c], nll[t][c]))
          << configs()[c].name << ": " << kThreads[t] << " threads vs 1, max |diff| "
          << max_abs_diff(nll[0][c], nll[t][c]);
    }
    EXPECT_TRUE(bit_identical(logits[0], logits[t]))
        << "prefill logits, " << kThreads[t] << " threads vs 1, max |diff| "
        << max_abs_diff(logits[0], logits[t]);
  }
}

}  // namespace
}  // namespace kvc::stress
