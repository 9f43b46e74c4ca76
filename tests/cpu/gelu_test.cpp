// The vectorized exact-erf GELU against a double-precision reference, on every compiled SIMD
// target: a dense sweep of [-16, 16], the tails where erfc underflows, special values, and
// lengths with vector tails (every element must get the same arithmetic wherever it sits).
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "cpu/matmul.h"

namespace kvc::cpu {
namespace {

double gelu_ref(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }

// Error bound, relative to the result: 8 units of fp32 roundoff (the erfc fit contributes
// < 1.2e-7 = 2 units, the rest is the rounding of t, the polynomial, exp and the products;
// measured: 7.1 units for |x| <= 2), plus x^2 units in the negative tail, where rounding the
// exponent P(t) - x^2/2 costs up to x^2/4 units of exp's result with FMA and x^2/2 without
// (measured: 0.46 x^2 and 0.92 x^2). There |GELU(x)| < 1.3e-4 once x < -4.
double tolerance(double x, double ref) { return (8 + x * x) * 0x1p-24 * std::fabs(ref) + 1e-37; }

TEST(Gelu, MatchesDoubleReferenceOnEveryTarget) {
  std::vector<float> xs;
  for (int i = -160000; i <= 160000; ++i) xs.push_back(static_cast<float>(i) * 1e-4f);
  for (float x : {-1e30f, -200.0f, -90.0f, -20.0f, -13.5f, 1e-30f, -1e-30f, 0.0f, -0.0f, 10.0f,
                  10.5f, 200.0f, 3e38f, std::numeric_limits<float>::denorm_min()})
    xs.push_back(x);
  std::string tried;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = simd_target_name();
    tried += name + " ";
    std::vector<float> y = xs;
    gelu(y.data(), static_cast<int64_t>(y.size()));
    double worst = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const double ref = gelu_ref(xs[i]);
      const double err = std::fabs(y[i] - ref);
      ASSERT_LE(err, tolerance(xs[i], ref))
          << name << " x=" << xs[i] << " got " << y[i] << " want " << ref;
      if (std::fabs(ref) > 1e-30 && std::fabs(xs[i]) <= 4)
        worst = std::max(worst, err / std::fabs(ref));
    }
    std::printf("[ info ] %s: worst relative error for |x| <= 4: %.2e (%.1f units of 2^-24)\n",
                name.c_str(), worst, worst / 0x1p-24);
    // Lengths 1..40 starting anywhere: each element equals the long run's value.
    for (int64_t len = 1; len <= 40; ++len) {
      std::vector<float> part(xs.begin() + 1000, xs.begin() + 1000 + len);
      gelu(part.data(), len);
      for (int64_t i = 0; i < len; ++i) ASSERT_EQ(part[i], y[1000 + i]) << name << " len " << len;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  std::printf("[ info ] targets tested: %s\n", tried.c_str());
}

TEST(Gelu, SpecialValues) {
  std::vector<float> x = {std::numeric_limits<float>::infinity(), std::nanf(""), 0.0f, -0.0f};
  gelu(x.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(x[0], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(x[1]));
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
}

}  // namespace
}  // namespace kvc::cpu
