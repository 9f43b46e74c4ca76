// matmul / dot / axpy against double-precision references, for every weight dtype, odd shapes,
// 1..9 tokens, with and without bias, 1 and 2 threads; plus bitwise determinism checks.
#include "cpu/matmul.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/kernels.h"

namespace kvc::cpu {
namespace {

using detail::bf16_to_f32;
using detail::f16_to_f32;
using detail::f32_to_bf16;

// Tolerances (documented in docs/cpu-kernels.md). Errors are measured relative to
// sum_k |w_k x_k|, the natural scale of a dot product's rounding error.
// Exact paths: fp32 accumulation, the bound allows 32 units of fp32 roundoff (2^-24).
constexpr double kExactTol = 32 * 0x1p-24;
// Native bf16 path: x rounded to bf16 costs up to 2^-9 relative per product; plus fp32 sums.
constexpr double kBf16ActsTol = 0x1p-9 + kExactTol;

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

// A random weight matrix stored as `dtype` in nn.Linear layout, plus its exact fp32 values.
struct TestMatrix {
  Matrix m;
  std::vector<float> values;  // exact value of every stored element
  std::unique_ptr<void, AlignedFree> storage;
};

TestMatrix make_matrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  TestMatrix t;
  const size_t n = static_cast<size_t>(rows * cols);
  const size_t bytes = (std::max<size_t>(n, 1) * dtype_size(dtype) + 63) / 64 * 64;
  t.storage.reset(std::aligned_alloc(64, bytes));
  t.values.resize(n);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::uniform_int_distribution<int> mant(0, 1023), expo(8, 15), sign(0, 1);
  for (size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::F32: {
        const float v = uni(rng);
        static_cast<float*>(t.storage.get())[i] = v;
        t.values[i] = v;
        break;
      }
      case DType::BF16: {
        const uint16_t b = f32_to_bf16(uni(rng));
        static_cast<uint16_t*>(t.storage.get())[i] = b;
        t.values[i] = bf16_to_f32(b);
        break;
      }
      case DType::F16: {  // magnitudes 2^-7 .. 2^1, all mantissas
        const uint16_t h = static_cast<uint16_t>(sign(rng) << 15 | expo(rng) << 10 | mant(rng));
        static_cast<uint16_t*>(t.storage.get())[i] = h;
        t.values[i] = f16_to_f32(h);
        break;
      }
    }
  }
  t.m = Matrix{dtype, rows, cols, t.storage.get()};
  return t;
}

std::vector<float> random_vec(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = uni(rng);
  return v;
}

struct ErrorStats {
  double max_rel = 0;    // max |y - ref| / sum|w x|
  double sum_sq = 0;     // sum of (|y - ref| / sum|w x|)^2, for the RMS
  double err_sq = 0, ref_sq = 0;  // for the relative L2 error ||y - ref|| / ||ref||
  int64_t count = 0;
};

// Checks y against a double reference; `round_x` applies bf16 rounding to the activations.
ErrorStats check(const TestMatrix& w, const std::vector<float>& x, int64_t n_tokens,
                 const float* bias, const std::vector<float>& y, double tol, bool round_x,
                 const std::string& what) {
  ErrorStats st;
  const int64_t rows = w.m.rows, cols = w.m.cols;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double ref = bias ? bias[r] : 0.0, scale = bias ? std::fabs(bias[r]) : 0.0;
      for (int64_t k = 0; k < cols; ++k) {
        float xv = x[t * cols + k];
        if (round_x) xv = bf16_to_f32(f32_to_bf16(xv));
        const double p = static_cast<double>(w.values[r * cols + k]) * xv;
        ref += p;
        scale += std::fabs(p);
      }
      const double err = std::fabs(y[t * rows + r] - ref);
      const double rel = scale > 0 ? err / scale : err;
      st.max_rel = std::max(st.max_rel, rel);
      st.sum_sq += rel * rel;
      ++st.count;
      st.err_sq += err * err;
      st.ref_sq += ref * ref;
      if (rel > tol) {
        ADD_FAILURE() << what << ": token " << t << " row " << r << " got " << y[t * rows + r]
                      << " want " << ref << " (error " << rel << " of sum|wx|, bound " << tol
                      << ")";
        return st;
      }
    }
  }
  return st;
}

const std::vector<std::pair<int64_t, int64_t>> kShapes = {
    {1, 1}, {7, 15}, {8, 16}, {9, 17}, {3, 31}, {5, 33}, {16, 80}, {13, 120},
    {33, 64}, {130, 257}, {24, 768}, {17, 2563}};

class MatmulDtype : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulDtype, MatchesDoubleReference) {
  const DType dtype = GetParam();
  std::mt19937 rng(1234 + static_cast<int>(dtype));
  ThreadPool pool1(1), pool2(2);
  double worst = 0;
  for (auto [rows, cols] : kShapes) {
    const TestMatrix w = make_matrix(dtype, rows, cols, rng);
    const std::vector<float> bias = random_vec(static_cast<size_t>(rows), rng);
    for (int64_t n_tokens = 1; n_tokens <= 9; ++n_tokens) {
      const std::vector<float> x = random_vec(static_cast<size_t>(n_tokens * cols), rng);
      for (bool with_bias : {false, true}) {
        for (ThreadPool* pool : {&pool1, &pool2}) {
          std::vector<float> y(static_cast<size_t>(n_tokens * rows), NAN);
          matmul(x.data(), n_tokens, w.m, with_bias ? bias.data() : nullptr, y.data(), *pool,
                 /*bf16_activations=*/false);
          const std::string what = std::string(dtype_name(dtype)) + " [" +
                                   std::to_string(rows) + "x" + std::to_string(cols) + "] n=" +
                                   std::to_string(n_tokens) + (with_bias ? " bias" : "") +
                                   " threads=" + std::to_string(pool->size());
          worst = std::max(worst, check(w, x, n_tokens, with_bias ? bias.data() : nullptr, y,
                                        kExactTol, false, what).max_rel);
        }
      }
    }
  }
  RecordProperty("max_rel_error", std::to_string(worst));
  std::printf("[ info ] %s exact path (%s): max error %.3g of sum|wx| (bound %.3g)\n",
              dtype_name(dtype), simd_target_name().c_str(), worst, kExactTol);
}

// Same results (bitwise) for 1, 2 and 3 threads, and decode == each token of a prefill.
TEST_P(MatmulDtype, DeterministicAcrossThreadsAndPaths) {
  const DType dtype = GetParam();
  std::mt19937 rng(99);
  ThreadPool pool1(1), pool2(2), pool3(3);
  const auto one_case = [&](bool bf16_acts, int64_t rows, int64_t cols, int64_t n_tokens) {
    const TestMatrix w = make_matrix(dtype, rows, cols, rng);
    const std::vector<float> bias = random_vec(static_cast<size_t>(rows), rng);
    const std::vector<float> x = random_vec(static_cast<size_t>(n_tokens * cols), rng);
    std::vector<float> y1(static_cast<size_t>(n_tokens * rows)), y2(y1), y3(y1), yd(y1);
    matmul(x.data(), n_tokens, w.m, bias.data(), y1.data(), pool1, bf16_acts);
    matmul(x.data(), n_tokens, w.m, bias.data(), y2.data(), pool2, bf16_acts);
    matmul(x.data(), n_tokens, w.m, bias.data(), y3.data(), pool3, bf16_acts);
    for (int64_t t = 0; t < n_tokens; ++t)
      matmul(x.data() + t * cols, 1, w.m, bias.data(), yd.data() + t * rows, pool2, bf16_acts);
    const std::string what = "[" + std::to_string(rows) + "x" + std::to_string(cols) + "] n=" +
                             std::to_string(n_tokens) + (bf16_acts ? " bf16 acts" : "");
    EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << what << ": 1 vs 2 threads";
    EXPECT_EQ(0, std::memcmp(y1.data(), y3.data(), y1.size() * 4)) << what << ": 1 vs 3 threads";
    EXPECT_EQ(0, std::memcmp(y1.data(), yd.data(), y1.size() * 4)) << what << ": prefill vs decode";
  };
  for (bool bf16_acts : {false, true})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{130, 257}, {64, 2563}, {37, 80}})
      for (int64_t n_tokens : {7, 70, 300})  // one tile; several tiles; several token blocks
        one_case(bf16_acts, rows, cols, n_tokens);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, MatmulDtype,
                         ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Every SIMD target compiled into the binary (SSSE3 ... AVX-512, scalar) that this CPU can run
// gives correct results, and decode equals prefill on each of them.
TEST(MatmulTargets, EveryCompiledTargetMatchesReference) {
  std::mt19937 rng(4321);
  ThreadPool pool(2);
  std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  std::string tried;
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = simd_target_name();
    EXPECT_EQ(name, hwy::TargetName(target));
    tried += name + " ";
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{9, 17}, {13, 120}, {20, 2563}}) {
        const TestMatrix w = make_matrix(dtype, rows, cols, rng);
        const std::vector<float> bias = random_vec(static_cast<size_t>(rows), rng);
        const int64_t n_tokens = 5;
        const std::vector<float> x = random_vec(static_cast<size_t>(n_tokens * cols), rng);
        std::vector<float> y(static_cast<size_t>(n_tokens * rows)), yd(y.size());
        matmul(x.data(), n_tokens, w.m, bias.data(), y.data(), pool, false);
        for (int64_t t = 0; t < n_tokens; ++t) {
          matmul(x.data() + t * cols, 1, w.m, bias.data(), yd.data() + t * rows, pool, false);
        }
        const std::string what = name + " " + dtype_name(dtype) + " [" + std::to_string(rows) +
                                 "x" + std::to_string(cols) + "]";
        check(w, x, n_tokens, bias.data(), y, kExactTol, false, what);
        EXPECT_EQ(y, yd) << what << ": prefill differs from decode";
      }
    }
    const std::vector<float> a = random_vec(333, rng), b = random_vec(333, rng);
    double ref = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      ref += static_cast<double>(a[i]) * b[i];
      scale += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_LE(std::fabs(dot_f32(a.data(), b.data(), 333) - ref), kExactTol * scale) << name;
  }
  hwy::SetSupportedTargetsForTest(0);  // back to the best target
  std::printf("[ info ] targets tested: %s\n", tried.c_str());
}

// The native bf16 path: error vs the exact product within 2^-9 of sum|wx|, and vs a reference
// using the same bf16-rounded activations within fp32 accumulation error.
TEST(MatmulBf16Activations, NativePathErrorBounds) {
  if (!has_native_bf16()) GTEST_SKIP() << "CPU has no AVX512_BF16; the exact path is used";
  std::mt19937 rng(7);
  ThreadPool pool(2);
  double worst_exact = 0, worst_rounded = 0, sq = 0, err_sq = 0, ref_sq = 0;
  int64_t count = 0;
  for (auto [rows, cols] : kShapes) {
    const TestMatrix w = make_matrix(DType::BF16, rows, cols, rng);
    const std::vector<float> bias = random_vec(static_cast<size_t>(rows), rng);
    for (int64_t n_tokens : {1, 2, 5, 9}) {
      const std::vector<float> x = random_vec(static_cast<size_t>(n_tokens * cols), rng);
      std::vector<float> y(static_cast<size_t>(n_tokens * rows));
      matmul(x.data(), n_tokens, w.m, bias.data(), y.data(), pool, /*bf16_activations=*/true);
      const std::string what = "bf16 acts [" + std::to_string(rows) + "x" +
                               std::to_string(cols) + "] n=" + std::to_string(n_tokens);
      const ErrorStats st = check(w, x, n_tokens, bias.data(), y, kBf16ActsTol, false, what);
      worst_exact = std::max(worst_exact, st.max_rel);
      sq += st.sum_sq;
      err_sq += st.err_sq;
      ref_sq += st.ref_sq;
      count += st.count;
      worst_rounded = std::max(
          worst_rounded, check(w, x, n_tokens, bias.data(), y, kExactTol, true, what).max_rel);
    }
  }
  std::printf("[ info ] bf16 activations: error vs exact: max %.3g, rms %.3g of sum|wx| (bound "
              "%.3g); ||y - ref|| / ||ref|| = %.3g; vs bf16-rounded x: max %.3g of sum|wx|\n",
              worst_exact, std::sqrt(sq / static_cast<double>(count)), kBf16ActsTol,
              std::sqrt(err_sq / ref_sq), worst_rounded);
}

// The process-wide switch routes bf16 weights to the native path and leaves f32 alone.
TEST(MatmulBf16Activations, GlobalSwitch) {
  std::mt19937 rng(8);
  ThreadPool pool(1);
  const TestMatrix w = make_matrix(DType::BF16, 16, 300, rng);
  const std::vector<float> x = random_vec(300, rng);
  std::vector<float> exact(16), fast(16), def(16), via_switch(16);
  EXPECT_FALSE(bf16_activations());
  matmul(x.data(), 1, w.m, nullptr, exact.data(), pool, false);
  matmul(x.data(), 1, w.m, nullptr, fast.data(), pool, true);
  matmul(x.data(), 1, w.m, nullptr, def.data(), pool);
  set_bf16_activations(true);
  matmul(x.data(), 1, w.m, nullptr, via_switch.data(), pool);
  set_bf16_activations(false);
  EXPECT_EQ(def, exact);
  EXPECT_EQ(via_switch, fast);
  if (has_native_bf16()) {
    EXPECT_NE(fast, exact);
  }
}

TEST(Matmul, EmptyAndInvalidArguments) {
  ThreadPool pool(2);
  std::vector<float> x(4, 1.0f), y(4, NAN), bias = {1, 2, 3, 4};
  // cols == 0: y = bias (or zero).
  matmul(x.data(), 1, Matrix{DType::F32, 4, 0, nullptr}, bias.data(), y.data(), pool);
  EXPECT_EQ(y, bias);
  matmul(nullptr, 0, Matrix{DType::F32, 4, 4, nullptr}, nullptr, nullptr, pool);  // no tokens
  std::vector<float> w(16, 1.0f);
  const Matrix m{DType::F32, 4, 4, w.data()};
  EXPECT_THROW(matmul(nullptr, 1, m, nullptr, y.data(), pool), kvc::Error);
  EXPECT_THROW(matmul(x.data(), 1, m, nullptr, nullptr, pool), kvc::Error);
  EXPECT_THROW(matmul(x.data(), -1, m, nullptr, y.data(), pool), kvc::Error);
  EXPECT_THROW(matmul(x.data(), 1, Matrix{DType::F32, 4, 4, nullptr}, nullptr, y.data(), pool),
               kvc::Error);
  try {
    matmul(x.data(), 1, Matrix{DType::F32, 4, 4, nullptr}, nullptr, y.data(), pool);
  } catch (const kvc::Error& e) {
    EXPECT_EQ(e.status(), KVC_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("weight data"), std::string::npos) << e.what();
  }
}

TEST(DotAxpy, MatchDoubleReference) {
  std::mt19937 rng(5);
  for (int64_t n : {0, 1, 3, 15, 16, 17, 63, 64, 65, 80, 128, 257, 2563}) {
    const std::vector<float> a = random_vec(static_cast<size_t>(n), rng);
    const std::vector<float> b = random_vec(static_cast<size_t>(n), rng);
    double ref = 0, scale = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += static_cast<double>(a[i]) * b[i];
      scale += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_LE(std::fabs(dot_f32(a.data(), b.data(), n) - ref), kExactTol * scale) << "n=" << n;
    std::vector<float> y = b;
    axpy_f32(0.75f, a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = 0.75 * a[i] + static_cast<double>(b[i]);
      ASSERT_LE(std::fabs(y[i] - want), 0x1p-24 * (std::fabs(0.75 * a[i]) + std::fabs(b[i])))
          << "n=" << n << " i=" << i;
    }
  }
}

// Exhaustive check of the scalar half -> float widening against its definition.
TEST(Conversions, HalfToFloatExhaustive) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const float got = f16_to_f32(static_cast<uint16_t>(h));
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0x1f) {
      if (m == 0) {
        ASSERT_TRUE(std::isinf(got) && std::signbit(got) == (sign < 0)) << h;
      } else {
        ASSERT_TRUE(std::isnan(got)) << h;
      }
      continue;
    }
    const double want = e == 0 ? sign * std::ldexp(m, -24) : sign * std::ldexp(1024 + m, e - 25);
    ASSERT_EQ(static_cast<double>(got), want) << "half bits " << h;
    ASSERT_EQ(std::signbit(got), sign < 0) << h;
  }
}

TEST(Conversions, FloatToBf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(bf16_to_f32(0x3f80) + 0x1p-8f), 0x3f80);  // tie -> even (down)
  EXPECT_EQ(f32_to_bf16(bf16_to_f32(0x3f81) + 0x1p-8f), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);  // above the tie -> up
  EXPECT_EQ(f32_to_bf16(-2.5f), 0xc020);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_TRUE(std::isinf(bf16_to_f32(f32_to_bf16(INFINITY))));
  for (uint32_t b = 0; b < 0x10000; b += 7) {  // bf16 values round-trip
    const float f = bf16_to_f32(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      ASSERT_EQ(f32_to_bf16(f), b);
    }
  }
}

}  // namespace
}  // namespace kvc::cpu
