// The signals computed when a policy decides (kvc/policy.h): WINDOW_ATTENTION, PIVOTAL_COUNT and
// KEY_MEAN_COSINE. Each is read through kvc_session_cache_scores (the policy ranks by it) while
// a session runs a multi-token step, decode steps and a manual eviction, and compared with the
// same quantity computed from an independent double-precision model's attention and keys
// (naive_reference.h), kept in a full history rather than a ring. Also the per-slot rings
// directly: wrap-around, slot reuse, and arrays left out unless requested.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "api/handles.h"
#include "engine/kv_cache.h"
#include "naive_reference.h"
#include "test_util.h"

namespace kvc::testing {
namespace {

// Attention of 2 layers x 4 heads in fp32 against double: probabilities agree to about 1e-6.
constexpr double kTolerance = 2e-5;

// Every query's probabilities by original position, per (layer, head), from the naive model.
struct History {
  struct Query {
    size_t visible;
    std::map<int64_t, double> prob;  // position -> probability
  };
  std::vector<std::vector<Query>> heads;

  void record(const NaiveNeox& m, int layers, int n_heads) {
    heads.resize(static_cast<size_t>(layers) * n_heads);
    for (int l = 0; l < layers; ++l)
      for (int h = 0; h < n_heads; ++h) {
        const auto& e = m.entries(l, h);
        const auto& p = m.last_probs(l, h);
        Query q{e.size(), {}};
        for (size_t r = 0; r < e.size(); ++r) q.prob[e[r].position] = p[r];
        heads[static_cast<size_t>(l) * n_heads + h].push_back(std::move(q));
      }
  }
  // The mean over the last w queries (sum / w, absent = 0), and how many of them gave the
  // position at least 1 / visible; *near is set when one was within 1e-6 of that threshold.
  double window(size_t head, int64_t pos, size_t w) const {
    const auto& qs = heads[head];
    double sum = 0;
    for (size_t i = qs.size() > w ? qs.size() - w : 0; i < qs.size(); ++i) {
      auto it = qs[i].prob.find(pos);
      if (it != qs[i].prob.end()) sum += it->second;
    }
    return sum / static_cast<double>(w);
  }
  int pivotal(size_t head, int64_t pos, size_t w, bool* near) const {
    const auto& qs = heads[head];
    int count = 0;
    for (size_t i = qs.size() > w ? qs.size() - w : 0; i < qs.size(); ++i) {
      auto it = qs[i].prob.find(pos);
      if (it == qs[i].prob.end()) continue;
      const double x = it->second * static_cast<double>(qs[i].visible);
      if (std::fabs(x - 1.0) < 1e-6) *near = true;
      count += x >= 1.0;
    }
    return count;
  }
};

double key_cosine(const std::vector<NaiveNeox::Entry>& entries, size_t r) {
  const size_t d = entries[0].key.size();
  std::vector<double> mean(d, 0.0);
  const auto norm = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x * x;
    return std::sqrt(s);
  };
  for (const auto& e : entries) {
    const double n = norm(e.key);
    for (size_t i = 0; i < d; ++i) mean[i] += e.key[i] / n / static_cast<double>(entries.size());
  }
  double dot = 0;
  for (size_t i = 0; i < d; ++i) dot += entries[r].key[i] * mean[i];
  return dot / (norm(entries[r].key) * norm(mean));
}

enum class Signal { Window, Pivotal, Cosine };

// Runs `policy` (whose ranking signal is `signal`, configured never to evict) over a text: a
// 6-token prefill, decode steps, a manual eviction after step 14, and compares the signal of
// every entry of every (layer, head) after every step.
void check_signal(Signal signal, const char* policy, std::vector<kvc_param> params,
                  kvc_position_mode mode, size_t window) {
  ModelPtr model = load(fixture_model("neox-par-r25"));
  ASSERT_TRUE(model);
  const ModelConfig& cfg = model->model->weights->config;
  const int L = cfg.n_layers, H = cfg.n_heads;
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.positions = mode;
  so.policy = policy;
  so.policy_path = KVC_BUILD_POLICY_DIR;
  so.params = params.data();
  so.n_params = params.size();
  kvc_session* raw = nullptr;
  ASSERT_EQ(kvc_session_create(model.get(), &so, &raw), KVC_OK) << kvc_last_error();
  SessionPtr s(raw);

  NaiveNeox naive(*model->model->weights);
  History history;
  const std::vector<int32_t> tokens = {5,  17, 93, 42, 8,  77, 64, 3,  29, 51, 11, 60,
                                       88, 14, 7,  99, 23, 45, 67, 2,  31, 70, 12, 9};
  const size_t prefill = 6, evict_after = 14;
  const std::vector<int32_t> keep = {0, 1, 3, 4, 7, 9, 10, 11, 12, 13};
  int compared = 0, nonzero = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (t == 0) {
      ASSERT_EQ(kvc_session_step(s.get(), tokens.data(), prefill, KVC_LOGITS_NONE, nullptr, 0),
                KVC_OK)
          << kvc_last_error();
    } else if (t >= prefill) {
      ASSERT_EQ(kvc_session_step(s.get(), &tokens[t], 1, KVC_LOGITS_NONE, nullptr, 0), KVC_OK)
          << kvc_last_error();
    }
    naive.feed(tokens[t], mode == KVC_POSITIONS_SHIFT);
    history.record(naive, L, H);
    if (t + 1 < prefill) continue;  // the prefill's signals are checked after its last token
    if (t + 1 == evict_after) {
      ASSERT_EQ(kvc_session_keep(s.get(), -1, -1, keep.data(), keep.size()), KVC_OK);
      naive.keep(std::vector<int>(keep.begin(), keep.end()));
    }
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < H; ++h) {
        SCOPED_TRACE("step " + std::to_string(t) + " layer " + std::to_string(l) + " head " +
                     std::to_string(h));
        const auto& entries = naive.entries(l, h);
        std::vector<float> got(64);
        size_t n = 0;
        ASSERT_EQ(kvc_session_cache_scores(s.get(), l, h, got.data(), got.size(), &n), KVC_OK)
            << kvc_last_error();
        ASSERT_EQ(n, entries.size());
        const size_t head = static_cast<size_t>(l) * H + h;
        for (size_t r = 0; r < n; ++r) {
          const int64_t pos = entries[r].position;
          if (signal == Signal::Window) {
            EXPECT_NEAR(got[r], history.window(head, pos, window), kTolerance) << "rank " << r;
          } else if (signal == Signal::Pivotal) {
            bool near = false;
            const int want = history.pivotal(head, pos, window, &near);
            if (near) continue;  // within rounding of the threshold: either count is right
            EXPECT_EQ(got[r], static_cast<float>(want)) << "rank " << r;
            nonzero += want > 0;
          } else {
            EXPECT_NEAR(got[r], key_cosine(entries, r), kTolerance) << "rank " << r;
          }
          ++compared;
        }
      }
  }
  // Guards against a vacuous pass: most values were compared, and counts are not all 0.
  EXPECT_GT(compared, 1000);
  if (signal == Signal::Pivotal) {
    EXPECT_GT(nonzero, 100);
  }
}

TEST(Signals, WindowAttentionIsTheMeanOfTheLastWindowQueries) {
  for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL})
    check_signal(Signal::Window, "snapkv",
                 {{"window", "4"}, {"heavy_size", "1000"}, {"kernel_size", "1"}}, mode, 4);
}

TEST(Signals, WindowLongerThanTheTextDividesByTheWindow) {
  check_signal(Signal::Window, "snapkv",
               {{"window", "40"}, {"heavy_size", "1000"}, {"kernel_size", "1"}},
               KVC_POSITIONS_SHIFT, 40);
}

TEST(Signals, PivotalCountCountsAtLeastUniformShares) {
  for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL})
    check_signal(Signal::Pivotal, "scissorhands", {{"history", "5"}, {"heavy_size", "1000"}},
                 mode, 5);
}

TEST(Signals, KeyMeanCosineIsToTheMeanUnitKeyOfTheCache) {
  for (const auto mode : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL})
    check_signal(Signal::Cosine, "keydiff", {{"heavy_size", "1000"}}, mode, 0);
}

// The rings on their own: one head of head_dim 2.
TEST(SignalRings, WrapAroundAndSlotReuse) {
  HeadCache h;
  h.init(2);
  h.set_signal_window(2, KVC_SIGNAL_WINDOW_ATTENTION | KVC_SIGNAL_PIVOTAL_COUNT);
  const float k[] = {3, 4}, v[] = {0, 0};
  h.append(k, v, 0, 1, false);
  const float q1[] = {1.0f};
  h.record_query(q1, 1);
  h.append(k, v, 1, 1, false);
  const float q2[] = {0.7f, 0.3f};
  h.record_query(q2, 2);
  h.append(k, v, 2, 1, false);
  const float q3[] = {0.2f, 0.5f, 0.3f};
  h.record_query(q3, 3);  // the window now holds queries 2 and 3 only
  h.derive(HeadCache::kDerivedSignals & ~KVC_SIGNAL_KEY_MEAN_COSINE);
  const auto& w = h.derived(KVC_SIGNAL_WINDOW_ATTENTION);
  EXPECT_FLOAT_EQ(w[0], (0.7f + 0.2f) / 2);
  EXPECT_FLOAT_EQ(w[1], (0.3f + 0.5f) / 2);
  EXPECT_FLOAT_EQ(w[2], 0.3f / 2);
  // Pivotal: 0.7 * 2 and 0.5 * 3 reach 1; 0.2 * 3, 0.3 * 2, 0.3 * 3 do not.
  EXPECT_EQ(h.derived(KVC_SIGNAL_PIVOTAL_COUNT), (std::vector<float>{1, 1, 0}));
  // Evict position 0 and reuse its slot: the new entry starts with empty rings.
  const int32_t gone[] = {0};
  h.evict(gone, 1);
  h.append(k, v, 3, 1, false);
  EXPECT_EQ(h.slots().back(), 0);
  h.derive(KVC_SIGNAL_WINDOW_ATTENTION | KVC_SIGNAL_PIVOTAL_COUNT);
  EXPECT_FLOAT_EQ(h.derived(KVC_SIGNAL_WINDOW_ATTENTION)[2], 0.0f);
  EXPECT_EQ(h.derived(KVC_SIGNAL_PIVOTAL_COUNT)[2], 0.0f);
}

TEST(SignalRings, KeyMeanCosineAndViewsCarryOnlyWhatWasAsked) {
  KvCache c(1, 1, 2);
  c.set_signal_window(0, KVC_SIGNAL_KEY_MEAN_COSINE);  // keeps the keys' norms as they come
  const float a[] = {1, 0}, b[] = {0, 2}, zero[] = {0, 0};
  c.head(0, 0).append(a, zero, 0, 1, false);
  c.head(0, 0).append(b, zero, 1, 1, false);
  const kvc_cache_view& plain = c.make_view(2, 2, KVC_SIGNAL_ACC_ATTENTION);
  EXPECT_EQ(plain.window_attention, nullptr);
  EXPECT_EQ(plain.key_mean_cosine, nullptr);
  EXPECT_EQ(plain.pivotal_count, nullptr);
  // Unit keys (1, 0) and (0, 1): their mean (0.5, 0.5) is at 45 degrees to both.
  const kvc_cache_view& v = c.make_view(2, 2, KVC_SIGNAL_KEY_MEAN_COSINE);
  ASSERT_NE(v.key_mean_cosine, nullptr);
  EXPECT_NEAR(v.key_mean_cosine[0][0], std::sqrt(0.5), 1e-7);
  EXPECT_NEAR(v.key_mean_cosine[0][1], std::sqrt(0.5), 1e-7);
  EXPECT_EQ(v.window_attention, nullptr);
}

}  // namespace
}  // namespace kvc::testing
