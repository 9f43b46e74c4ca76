// The sampler's documented chain on hand-made logits (core/src/engine/sampler.h, kvc.h):
// greedy, top-k, top-p, min-p, temperature, the repetition penalty's CTRL rule, the SplitMix64
// stream, and the errors for bad settings through the C ABI.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "kvc/kvc.h"

namespace kvc {
namespace {

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

std::vector<int32_t> ids_of(const std::vector<Sampler::Candidate>& c) {
  std::vector<int32_t> ids;
  for (const auto& x : c) ids.push_back(x.id);
  return ids;
}

SamplerConfig config(double temperature) {
  SamplerConfig c;
  c.temperature = temperature;
  return c;
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s(config(0));
  const std::vector<float> a = {0.1f, 2.5f, -3.0f, 2.4f};
  EXPECT_EQ(s.sample(a.data(), a.size()), 1);
  const std::vector<float> tie = {1.0f, 7.0f, 3.0f, 7.0f};
  EXPECT_EQ(s.sample(tie.data(), tie.size()), 1);
  // Random logits: always the argmax, whatever the seed.
  uint64_t state = 12345;
  for (int round = 0; round < 50; ++round) {
    std::vector<float> l(1000);
    for (auto& x : l) x = static_cast<float>(Sampler::uniform(state, round * 1000 + (&x - l.data())) * 20 - 10);
    const auto best = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    SamplerConfig c = config(0);
    c.seed = static_cast<uint64_t>(round);
    Sampler g(c);
    EXPECT_EQ(g.sample(l.data(), l.size()), best);
  }
}

TEST(Sampler, NonFiniteAndMaskedLogitsAreNeverChosen) {
  Sampler s(config(0));
  const std::vector<float> l = {NAN, -INFINITY, 1.0f, 5.0f};
  const std::vector<uint8_t> allowed = {1, 1, 1, 0};
  EXPECT_EQ(s.sample(l.data(), l.size(), allowed.data()), 2);
  const std::vector<float> none = {NAN, -INFINITY};
  EXPECT_THROW(s.sample(none.data(), none.size()), std::exception);
  Sampler t(config(1));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(t.sample(l.data(), l.size(), allowed.data()), 2);
}

TEST(Sampler, TopKKeepsExactlyKTiesBrokenById) {
  SamplerConfig c = config(1);
  c.top_k = 2;
  const std::vector<float> l = {1, 5, 3, 5, 2};
  EXPECT_EQ(ids_of(Sampler(c).candidates(l.data(), l.size())), (std::vector<int32_t>{1, 3}));
  c.top_k = 3;
  EXPECT_EQ(ids_of(Sampler(c).candidates(l.data(), l.size())), (std::vector<int32_t>{1, 3, 2}));
  c.top_k = 10;  // more than there are: all, sorted
  EXPECT_EQ(ids_of(Sampler(c).candidates(l.data(), l.size())),
            (std::vector<int32_t>{1, 3, 2, 4, 0}));
  // Renormalized over the kept two: equal logits, equal halves.
  c.top_k = 2;
  const auto kept = Sampler(c).candidates(l.data(), l.size());
  EXPECT_NEAR(kept[0].p, 0.5, 1e-12);
  EXPECT_NEAR(kept[1].p, 0.5, 1e-12);
}

TEST(Sampler, TopPKeepsTheShortestPrefixReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at ids 2, 0, 3, 1.
  const auto l = log_probs({0.3, 0.05, 0.5, 0.15});
  auto kept = [&](double top_p) {
    SamplerConfig c = config(1);
    c.top_p = top_p;
    return Sampler(c).candidates(l.data(), l.size());
  };
  EXPECT_EQ(ids_of(kept(0.45)), (std::vector<int32_t>{2}));
  EXPECT_EQ(ids_of(kept(0.75)), (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(ids_of(kept(0.9)), (std::vector<int32_t>{2, 0, 3}));
  EXPECT_EQ(ids_of(kept(0.96)), (std::vector<int32_t>{2, 0, 3, 1}));
  EXPECT_EQ(ids_of(kept(1.0)), (std::vector<int32_t>{2, 0, 3, 1}));
  EXPECT_EQ(ids_of(kept(1e-9)), (std::vector<int32_t>{2}));  // always one
  const auto two = kept(0.75);
  EXPECT_NEAR(two[0].p, 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(two[1].p, 0.3 / 0.8, 1e-6);
}

TEST(Sampler, MinPKeepsThoseAtLeastMinPTimesTheLargest) {
  const auto l = log_probs({0.3, 0.05, 0.5, 0.15});
  auto kept = [&](double min_p) {
    SamplerConfig c = config(1);
    c.min_p = min_p;
    return Sampler(c).candidates(l.data(), l.size());
  };
  EXPECT_EQ(ids_of(kept(0.2)), (std::vector<int32_t>{2, 0, 3}));  // p >= 0.1
  EXPECT_EQ(ids_of(kept(0.5)), (std::vector<int32_t>{2, 0}));     // p >= 0.25
  EXPECT_EQ(ids_of(kept(0.09)), (std::vector<int32_t>{2, 0, 3, 1}));
  EXPECT_EQ(ids_of(kept(1.0)), (std::vector<int32_t>{2}));
  EXPECT_EQ(ids_of(kept(0.0)), (std::vector<int32_t>{2, 0, 3, 1}));
}

TEST(Sampler, ChainOrderTopKThenTopPThenMinP) {
  // p = 0.4 0.3 0.2 0.1 at ids 0..3. top_k 3 -> 0.4/0.9 0.3/0.9 0.2/0.9 = .444 .333 .222;
  // top_p 0.7 -> ids 0, 1 (cum before id 1 is .444 < .7; before id 2 .778); min_p 0.8 of
  // .444 = .356 -> id 0 only.
  const auto l = log_probs({0.4, 0.3, 0.2, 0.1});
  SamplerConfig c = config(1);
  c.top_k = 3;
  c.top_p = 0.7;
  EXPECT_EQ(ids_of(Sampler(c).candidates(l.data(), l.size())), (std::vector<int32_t>{0, 1}));
  c.min_p = 0.8;
  EXPECT_EQ(ids_of(Sampler(c).candidates(l.data(), l.size())), (std::vector<int32_t>{0}));
}

TEST(Sampler, TemperatureScalesLogits) {
  const std::vector<float> l = {2.0f, 0.0f, -1.0f};
  SamplerConfig c = config(2.0);
  const auto kept = Sampler(c).candidates(l.data(), l.size());
  const double z = std::exp(1.0) + std::exp(0.0) + std::exp(-0.5);
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_NEAR(kept[0].p, std::exp(1.0) / z, 1e-12);
  EXPECT_NEAR(kept[1].p, 1.0 / z, 1e-12);
  EXPECT_NEAR(kept[2].p, std::exp(-0.5) / z, 1e-12);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  const std::vector<float> l = {2.0f, -2.0f, 1.0f, 0.5f};
  SamplerConfig c = config(1);
  c.repetition_penalty = 2.0;
  c.repetition_last_n = -1;
  Sampler s(c);
  const std::vector<int32_t> history = {0, 1, 0};  // a repeat counts once
  s.accept(history.data(), history.size());
  // Effective logits 1, -4, 1, 0.5.
  const double z = 2 * std::exp(1.0) + std::exp(-4.0) + std::exp(0.5);
  const auto kept = s.candidates(l.data(), l.size());
  std::map<int32_t, double> p;
  for (const auto& x : kept) p[x.id] = x.p;
  EXPECT_NEAR(p[0], std::exp(1.0) / z, 1e-12);
  EXPECT_NEAR(p[1], std::exp(-4.0) / z, 1e-12);
  EXPECT_NEAR(p[2], std::exp(1.0) / z, 1e-12);
  EXPECT_NEAR(p[3], std::exp(0.5) / z, 1e-12);
  EXPECT_EQ(ids_of(kept), (std::vector<int32_t>{0, 2, 3, 1}));  // 0 and 2 tie: by id

  // Greedy flips from id 0 to id 2 once 0 is penalized; the window limits who is penalized.
  SamplerConfig g = config(0);
  g.repetition_penalty = 5.0;
  g.repetition_last_n = 1;
  Sampler w(g);
  const std::vector<int32_t> h2 = {0, 2};  // with last_n 1 only id 2 is in the window
  w.accept(h2.data(), h2.size());
  EXPECT_EQ(w.sample(l.data(), l.size()), 0);  // 2, -2, 0.2, 0.5
  g.repetition_last_n = 2;
  Sampler w2(g);
  w2.accept(h2.data(), h2.size());
  EXPECT_EQ(w2.sample(l.data(), l.size()), 3);  // 0.4, -2, 0.2, 0.5
  g.repetition_last_n = 0;  // no window: no penalty
  Sampler w3(g);
  w3.accept(h2.data(), h2.size());
  EXPECT_EQ(w3.sample(l.data(), l.size()), 0);
  // The sampled token joins the history: with the whole history penalized, greedy moves on.
  g.repetition_last_n = -1;
  Sampler w4(g);
  EXPECT_EQ(w4.sample(l.data(), l.size()), 0);  // nothing penalized yet
  EXPECT_EQ(w4.sample(l.data(), l.size()), 2);  // 0 -> 0.4: id 2 (logit 1) is the largest
}

TEST(Sampler, SplitMix64StreamAsDocumented) {
  // The first outputs of SplitMix64 seeded with 0 and with 1234567 (6457827717110365317, the
  // reference value of Vigna's splitmix64.c for that seed).
  EXPECT_EQ(Sampler::uniform(0, 0), static_cast<double>(0xE220A8397B1DCDAFull >> 11) * 0x1.0p-53);
  EXPECT_EQ(Sampler::uniform(0, 1), static_cast<double>(0x6E789E6AA1B965F4ull >> 11) * 0x1.0p-53);
  EXPECT_EQ(Sampler::uniform(1234567, 0),
            static_cast<double>(0x599ED017FB08FC85ull >> 11) * 0x1.0p-53);
}

TEST(Sampler, FixedSeedRepeatsAndDrawsFollowTheProbabilities) {
  const auto l = log_probs({0.1, 0.2, 0.3, 0.4});
  SamplerConfig c = config(1);
  c.seed = 7;
  Sampler a(c), b(c);
  std::vector<int32_t> first, second;
  std::vector<int> counts(4, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    first.push_back(a.sample(l.data(), l.size()));
    second.push_back(b.sample(l.data(), l.size()));
    ++counts[static_cast<size_t>(first.back())];
  }
  EXPECT_EQ(first, second);
  for (int id = 0; id < 4; ++id)
    EXPECT_NEAR(counts[static_cast<size_t>(id)] / static_cast<double>(n), 0.1 * (id + 1), 0.01);
  // reset() restarts the stream; another seed gives another sequence.
  a.reset();
  std::vector<int32_t> again;
  for (int i = 0; i < 100; ++i) again.push_back(a.sample(l.data(), l.size()));
  EXPECT_EQ(again, std::vector<int32_t>(first.begin(), first.begin() + 100));
  c.seed = 8;
  Sampler d(c);
  std::vector<int32_t> other;
  for (int i = 0; i < 100; ++i) other.push_back(d.sample(l.data(), l.size()));
  EXPECT_NE(other, again);
}

// ---- through the C ABI -----------------------------------------------------------------------

std::string create_error(void (*edit)(kvc_sampler_options&), kvc_status* status) {
  kvc_sampler_options o;
  kvc_sampler_options_init(&o);
  edit(o);
  kvc_sampler* s = nullptr;
  *status = kvc_sampler_create(&o, &s);
  kvc_sampler_free(s);
  return kvc_last_error();
}

TEST(SamplerApi, DefaultsAndSampling) {
  kvc_sampler_options o;
  kvc_sampler_options_init(&o);
  EXPECT_EQ(o.struct_size, sizeof o);
  EXPECT_EQ(o.temperature, 1.0f);
  EXPECT_EQ(o.top_k, 0);
  EXPECT_EQ(o.top_p, 1.0f);
  EXPECT_EQ(o.min_p, 0.0f);
  EXPECT_EQ(o.repetition_penalty, 1.0f);
  EXPECT_EQ(o.repetition_last_n, 64);
  o.temperature = 0;
  kvc_sampler* s = nullptr;
  ASSERT_EQ(kvc_sampler_create(&o, &s), KVC_OK) << kvc_last_error();
  const float l[] = {0.0f, 3.0f, 1.0f};
  int32_t token = -1;
  ASSERT_EQ(kvc_sampler_sample(s, l, 3, &token), KVC_OK);
  EXPECT_EQ(token, 1);
  EXPECT_EQ(kvc_sampler_sample(s, nullptr, 3, &token), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kvc_sampler_sample(s, l, 0, &token), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kvc_sampler_accept(s, nullptr, 2), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kvc_sampler_reset(s), KVC_OK);
  kvc_sampler_free(s);
  EXPECT_EQ(kvc_sampler_create(nullptr, &s), KVC_OK);  // defaults
  kvc_sampler_free(s);
  EXPECT_EQ(kvc_sampler_create(nullptr, nullptr), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kvc_sampler_reset(nullptr), KVC_ERR_INVALID_ARGUMENT);
}

TEST(SamplerApi, BadValuesNameTheFieldAndTheValue) {
  struct Case {
    void (*edit)(kvc_sampler_options&);
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {[](kvc_sampler_options& o) { o.temperature = -1; }, {"temperature", "-1", ">= 0"}},
      {[](kvc_sampler_options& o) { o.temperature = NAN; }, {"temperature", "nan"}},
      {[](kvc_sampler_options& o) { o.top_p = 0; }, {"top_p", "0", "(0, 1]"}},
      {[](kvc_sampler_options& o) { o.top_p = 1.5f; }, {"top_p", "1.5", "(0, 1]"}},
      {[](kvc_sampler_options& o) { o.min_p = -0.25f; }, {"min_p", "-0.25", "[0, 1]"}},
      {[](kvc_sampler_options& o) { o.min_p = 2; }, {"min_p", "2", "[0, 1]"}},
      {[](kvc_sampler_options& o) { o.top_k = -3; }, {"top_k", "-3", ">= 0"}},
      {[](kvc_sampler_options& o) { o.repetition_penalty = 0; }, {"repetition_penalty", "0"}},
      {[](kvc_sampler_options& o) { o.repetition_last_n = -2; }, {"repetition_last_n", "-2"}},
      {[](kvc_sampler_options& o) { o.struct_size = 0; }, {"struct_size"}},
  };
  for (const auto& c : cases) {
    kvc_status st = KVC_OK;
    const std::string msg = create_error(c.edit, &st);
    EXPECT_EQ(st, KVC_ERR_INVALID_ARGUMENT) << msg;
    for (const auto& w : c.words) EXPECT_NE(msg.find(w), std::string::npos) << msg << " / " << w;
  }
}

}  // namespace
}  // namespace kvc
