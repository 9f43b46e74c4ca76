// The attention kernels (scores with rotary keys, softmax exp, weighted values) against
// double-precision references, on every compiled SIMD target, for head sizes and rotary halves
// that are and are not multiples of the vector length, and cache sizes with vector tails.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "cpu/matmul.h"

namespace kvc::cpu {
namespace {

// Error bounds relative to the sum of |terms| (the scale of a dot product's rounding error),
// as in matmul_test: 32 units of fp32 roundoff. exp: Highway documents 1 ulp; allow 4.
constexpr double kDotTol = 32 * 0x1p-24;
constexpr double kExpTol = 4 * 0x1p-24;

struct Case {
  int64_t hd, half, count, n_slots, n_positions;
};

struct Data {
  std::vector<float> q, keys, values, cos, sin;
  std::vector<int32_t> slots;
  std::vector<int64_t> positions;
};

Data make_data(const Case& c, std::mt19937& rng) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const auto fill = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& e : v) e = uni(rng);
    return v;
  };
  Data d;
  d.q = fill(c.hd);
  d.keys = fill(c.n_slots * c.hd);
  d.values = fill(c.n_slots * c.hd);
  d.cos.resize(c.n_positions * c.half);
  d.sin.resize(d.cos.size());
  for (int64_t p = 0; p < c.n_positions; ++p)
    for (int64_t i = 0; i < c.half; ++i) {
      const double angle = p * std::pow(10000.0, -2.0 * i / (2.0 * c.half));
      d.cos[p * c.half + i] = static_cast<float>(std::cos(angle));
      d.sin[p * c.half + i] = static_cast<float>(std::sin(angle));
    }
  std::uniform_int_distribution<int32_t> slot(0, static_cast<int32_t>(c.n_slots - 1));
  std::uniform_int_distribution<int64_t> pos(0, c.n_positions - 1);
  for (int64_t r = 0; r < c.count; ++r) {
    d.slots.push_back(slot(rng));
    d.positions.push_back(pos(rng));
  }
  return d;
}

void check_case(const Case& c, bool with_positions, const std::string& target, std::mt19937& rng) {
  const Data d = make_data(c, rng);
  const float scale = 0.125f;
  const std::string what = target + " hd=" + std::to_string(c.hd) + " half=" +
                           std::to_string(c.half) + " count=" + std::to_string(c.count) +
                           (with_positions ? " positions" : " ranks");
  std::vector<float> scores(c.count);
  attention_scores(d.q.data(), d.keys.data(), d.values.data(), d.slots.data(),
                   with_positions ? d.positions.data() : nullptr, d.cos.data(), d.sin.data(),
                   c.half, c.hd, scale, c.count, scores.data());
  for (int64_t r = 0; r < c.count; ++r) {
    const float* k = &d.keys[d.slots[r] * c.hd];
    const int64_t p = with_positions ? d.positions[r] : r;
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < c.hd; ++i) {
      double kr = k[i];
      if (i < 2 * c.half) {  // rotate_half on the first 2*half channels
        const int64_t j = i % c.half;
        const double cs = d.cos[p * c.half + j], sn = d.sin[p * c.half + j];
        kr = i < c.half ? k[i] * cs - k[i + c.half] * sn : k[i] * cs + k[i - c.half] * sn;
      }
      ref += d.q[i] * kr;
      mag += std::fabs(d.q[i] * kr) + 2 * std::fabs(d.q[i]);  // + rotation's own rounding
    }
    ASSERT_LE(std::fabs(scores[r] - scale * ref), kDotTol * scale * mag) << what << " r=" << r;
  }
  // The values are only prefetched: without them the scores are the same bits.
  std::vector<float> no_values(c.count);
  attention_scores(d.q.data(), d.keys.data(), nullptr, d.slots.data(),
                   with_positions ? d.positions.data() : nullptr, d.cos.data(), d.sin.data(),
                   c.half, c.hd, scale, c.count, no_values.data());
  ASSERT_EQ(no_values, scores) << what;

  // Softmax: exp(s - max) and the sum.
  std::vector<float> e = scores;
  const float sum = softmax_exp(e.data(), c.count);
  double max_s = -INFINITY, ref_sum = 0;
  for (float s : scores) max_s = std::max<double>(max_s, s);
  for (int64_t r = 0; r < c.count; ++r) {
    const double want = std::exp(scores[r] - max_s);
    ref_sum += want;
    ASSERT_LE(std::fabs(e[r] - want), kExpTol * want + 1e-30) << what << " r=" << r;
  }
  ASSERT_LE(std::fabs(sum - ref_sum), (kExpTol + kDotTol) * ref_sum) << what;

  // Weighted values.
  std::vector<float> probs(c.count), out(c.hd, -1.0f);
  for (int64_t r = 0; r < c.count; ++r) probs[r] = e[r] / sum;
  attention_values(probs.data(), d.values.data(), d.slots.data(), c.hd, c.count, out.data());
  for (int64_t i = 0; i < c.hd; ++i) {
    double ref = 0, mag = 0;
    for (int64_t r = 0; r < c.count; ++r) {
      ref += static_cast<double>(probs[r]) * d.values[d.slots[r] * c.hd + i];
      mag += std::fabs(static_cast<double>(probs[r]) * d.values[d.slots[r] * c.hd + i]);
    }
    ASSERT_LE(std::fabs(out[i] - ref), kDotTol * mag + 1e-30) << what << " i=" << i;
  }
}

TEST(AttentionKernels, MatchDoubleReferenceOnEveryTarget) {
  std::mt19937 rng(77);
  // Pythia shapes (hd 64/80/128/256 with rotary_pct 0.25) and odd ones: rotary on all channels,
  // halves of 1, 3 and 10, head sizes below one vector.
  const Case cases[] = {{64, 8, 160, 200, 300},  {80, 10, 33, 40, 64},  {256, 32, 17, 20, 40},
                        {128, 16, 1, 3, 5},      {40, 20, 45, 50, 70},  {8, 4, 9, 9, 12},
                        {6, 1, 31, 31, 40},      {24, 3, 16, 20, 30},   {16, 8, 2, 2, 4}};
  std::string tried;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = simd_target_name();
    tried += name + " ";
    for (const Case& c : cases) {
      check_case(c, true, name, rng);
      check_case(c, false, name, rng);
    }
  }
  hwy::SetSupportedTargetsForTest(0);  // back to the best target
  std::printf("[ info ] targets tested: %s\n", tried.c_str());
}

// Entries far below the maximum underflow to exactly 0 instead of producing NaN or garbage.
TEST(AttentionKernels, SoftmaxUnderflowsToZero) {
  std::vector<float> s = {0.0f, -200.0f, -1e30f, 5.0f, -90.0f};
  const float sum = softmax_exp(s.data(), static_cast<int64_t>(s.size()));
  EXPECT_EQ(s[1], 0.0f);
  EXPECT_EQ(s[2], 0.0f);
  EXPECT_EQ(s[3], 1.0f);
  EXPECT_NEAR(sum, 1.0 + std::exp(-5.0), 1e-6);
}

}  // namespace
}  // namespace kvc::cpu
