// Position modes (docs/policies.md §2): shift rotates keys by their rank in the cache, original
// by their position in the text. Without eviction the two coincide; after an eviction, shift
// re-rotates the survivors, which we check against an independent double-precision model.
#include <gtest/gtest.h>

#include <cmath>

#include "api/handles.h"
#include "naive_reference.h"
#include "test_util.h"

namespace kvc::testing {
namespace {

const std::vector<int32_t> kTokens = {5, 17, 93, 42, 8, 77, 64, 3, 29, 51, 11, 60, 88, 14};

// Feeds `tokens` one by one and returns all logits; after token number `evict_at` (1-based; 0 =
// never) keeps only `keep_ranks` in every (layer, head).
std::vector<float> run(kvc_model* model, kvc_position_mode mode,
                       const std::vector<int32_t>& tokens, size_t evict_at,
                       const std::vector<int32_t>& keep_ranks) {
  auto s = session(model, mode);
  const size_t vocab = static_cast<size_t>(vocab_of(model));
  std::vector<float> all;
  std::vector<float> logits(vocab);
  for (size_t t = 0; t < tokens.size(); ++t) {
    EXPECT_EQ(kvc_session_step(s.get(), &tokens[t], 1, KVC_LOGITS_LAST, logits.data(), vocab),
              KVC_OK)
        << kvc_last_error();
    all.insert(all.end(), logits.begin(), logits.end());
    if (t + 1 == evict_at) {
      EXPECT_EQ(kvc_session_keep(s.get(), -1, -1, keep_ranks.data(), keep_ranks.size()), KVC_OK)
          << kvc_last_error();
    }
  }
  return all;
}

TEST(Positions, ShiftEqualsOriginalWithoutEviction) {
  for (const char* name : {"neox-par-r25", "neox-seq-r100", "neox-hd40"}) {
    auto model = load(fixture_model(name));
    ASSERT_TRUE(model);
    // With a full cache every rank equals its position: bit-identical logits.
    EXPECT_EQ(run(model.get(), KVC_POSITIONS_SHIFT, kTokens, 0, {}),
              run(model.get(), KVC_POSITIONS_ORIGINAL, kTokens, 0, {}))
        << name;
  }
}

void expect_matches_naive(const char* name, bool shift) {
  auto model = load(fixture_model(name));
  ASSERT_TRUE(model);
  const std::vector<int32_t> keep = {0, 1, 2, 5, 6, 7, 8, 9};  // evicts ranks 3 and 4
  const size_t evict_at = 10;
  const std::vector<float> got =
      run(model.get(), shift ? KVC_POSITIONS_SHIFT : KVC_POSITIONS_ORIGINAL, kTokens, evict_at,
          keep);

  NaiveNeox naive(*model->model->weights);
  const size_t vocab = static_cast<size_t>(vocab_of(model.get()));
  float worst = 0;
  for (size_t t = 0; t < kTokens.size(); ++t) {
    const std::vector<double> ref = naive.feed(kTokens[t], shift);
    for (size_t i = 0; i < vocab; ++i)
      worst = std::max(worst, static_cast<float>(std::fabs(got[t * vocab + i] - ref[i])));
    if (t + 1 == evict_at) naive.keep({0, 1, 2, 5, 6, 7, 8, 9});
  }
  EXPECT_LE(worst, 1e-4f) << name << (shift ? " shift" : " original");
}

TEST(Positions, ShiftReRotatesSurvivorsAfterManualEviction) {
  expect_matches_naive("neox-par-r25", true);
  expect_matches_naive("neox-hd40", true);
}

TEST(Positions, OriginalKeepsTextPositionsAfterManualEviction) {
  expect_matches_naive("neox-par-r25", false);
  expect_matches_naive("neox-seq-r100", false);
}

TEST(Positions, EvictionChangesShiftLogits) {
  // Guards the test above against a vacuous pass: after evicting, shift and original differ.
  auto model = load(fixture_model("neox-par-r25"));
  const std::vector<int32_t> keep = {0, 1, 2, 5, 6, 7, 8, 9};
  const auto a = run(model.get(), KVC_POSITIONS_SHIFT, kTokens, 10, keep);
  const auto b = run(model.get(), KVC_POSITIONS_ORIGINAL, kTokens, 10, keep);
  EXPECT_NE(a, b);
}

TEST(Positions, CacheEntriesReportOriginalPositions) {
  auto model = load(fixture_model("neox-par-r25"));
  auto s = session(model.get());
  ASSERT_EQ(kvc_session_step(s.get(), kTokens.data(), 10, KVC_LOGITS_NONE, nullptr, 0), KVC_OK);
  const std::vector<int32_t> keep = {0, 3, 9};
  ASSERT_EQ(kvc_session_keep(s.get(), 1, 2, keep.data(), keep.size()), KVC_OK);
  int64_t pos[16];
  int32_t ids[16];
  size_t n = 0;
  ASSERT_EQ(kvc_session_cache_entries(s.get(), 1, 2, pos, ids, 16, &n), KVC_OK);
  ASSERT_EQ(n, 3u);
  EXPECT_EQ(pos[0], 0);
  EXPECT_EQ(pos[1], 3);
  EXPECT_EQ(pos[2], 9);
  EXPECT_EQ(ids[1], kTokens[3]);
  ASSERT_EQ(kvc_session_cache_entries(s.get(), 0, 0, pos, ids, 16, &n), KVC_OK);
  EXPECT_EQ(n, 10u);
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  ASSERT_EQ(kvc_session_cache_stats(s.get(), &st), KVC_OK);
  EXPECT_EQ(st.min_entries, 3);
  EXPECT_EQ(st.max_entries_now, 10);
  EXPECT_EQ(st.n_tokens_seen, 10);
  EXPECT_EQ(st.capacity, -1);
}

}  // namespace
}  // namespace kvc::testing
