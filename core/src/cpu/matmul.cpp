#include "cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/kernels.h"

namespace kvc::cpu {
namespace {

std::atomic<bool> g_bf16_activations{false};

void check_args(const float* x, int64_t n_tokens, const Matrix& W, float* y) {
  require(n_tokens >= 0, KVC_ERR_INVALID_ARGUMENT,
          "matmul: n_tokens must be >= 0, got " + std::to_string(n_tokens));
  require(W.rows >= 0 && W.cols >= 0, KVC_ERR_INVALID_ARGUMENT,
          "matmul: weight shape must be non-negative, got [" + std::to_string(W.rows) + ", " +
              std::to_string(W.cols) + "]");
  if (n_tokens == 0 || W.rows == 0) return;
  require(y != nullptr, KVC_ERR_INVALID_ARGUMENT, "matmul: output pointer y is null");
  require(W.cols == 0 || (x != nullptr && W.data != nullptr), KVC_ERR_INVALID_ARGUMENT,
          std::string("matmul: ") + (x ? "weight data" : "input x") + " is null for a [" +
              std::to_string(W.rows) + ", " + std::to_string(W.cols) + "] " +
              dtype_name(W.dtype) + " matrix");
  require(W.dtype == DType::F32 || W.dtype == DType::BF16 || W.dtype == DType::F16,
          KVC_ERR_UNSUPPORTED,
          "matmul: unsupported weight dtype code " +
              std::to_string(static_cast<int>(W.dtype)));
}

// Splits rows over the pool in units of kRowUnit rows, kChunksPerThread chunks per thread
// claimed by whichever thread is free: on this kind of shared machine two cores rarely stream
// at the same rate, and with one chunk each the faster one idled for ~10 % of a decode step.
// The split depends only on the shape and the pool size, and each output row is computed by
// exactly one thread (every row's arithmetic is the same wherever it runs).
constexpr int kChunksPerThread = 4;
template <typename Fn>
void for_row_ranges(int64_t rows, ThreadPool& pool, Fn&& fn) {
  const int64_t units = (rows + detail::kRowUnit - 1) / detail::kRowUnit;
  // parallel_for_chunks caps the count at `units` itself.
  const int chunks =
      pool.size() == 1 ? 1 : std::min(pool.size() * kChunksPerThread, ThreadPool::kMaxChunks);
  pool.parallel_for_chunks(units, chunks, [&](int64_t u0, int64_t u1, int) {
    fn(u0 * detail::kRowUnit, std::min(rows, u1 * detail::kRowUnit));
  });
}

}  // namespace

void set_bf16_activations(bool enabled) { g_bf16_activations.store(enabled); }
bool bf16_activations() { return g_bf16_activations.load(); }
bool has_native_bf16() { return detail::native_bf16_supported(); }
std::string simd_target_name() { return detail::target_name(); }

void matmul(const float* x, int64_t n_tokens, const Matrix& W, const float* bias, float* y,
            ThreadPool& pool) {
  matmul(x, n_tokens, W, bias, y, pool, g_bf16_activations.load(std::memory_order_relaxed));
}

void matmul(const float* x, int64_t n_tokens, const Matrix& W, const float* bias, float* y,
            ThreadPool& pool, bool bf16_acts) {
  check_args(x, n_tokens, W, y);
  const int64_t rows = W.rows, cols = W.cols;
  if (n_tokens == 0 || rows == 0) return;
  if (cols == 0) {  // empty dot products
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t r = 0; r < rows; ++r) y[t * rows + r] = bias ? bias[r] : 0.0f;
    return;
  }

  if (bf16_acts && W.dtype == DType::BF16 && detail::native_bf16_supported()) {
    thread_local std::vector<uint16_t> xb;
    xb.resize(static_cast<size_t>(n_tokens * cols));
    for (int64_t i = 0; i < n_tokens * cols; ++i) xb[i] = detail::f32_to_bf16(x[i]);
    const auto* w = static_cast<const uint16_t*>(W.data);
    const uint16_t* xbp = xb.data();
    if (n_tokens == 1) {
      for_row_ranges(rows, pool, [&](int64_t r0, int64_t r1) {
        detail::matvec_rows_bf16_native(w, cols, xbp, bias, y, r0, r1);
      });
    } else {
      for_row_ranges(rows, pool, [&](int64_t r0, int64_t r1) {
        detail::gemm_rows_bf16_native(w, rows, cols, xbp, n_tokens, bias, y, r0, r1);
      });
    }
    return;
  }

  if (n_tokens == 1) {
    for_row_ranges(rows, pool, [&](int64_t r0, int64_t r1) {
      detail::matvec_rows(W.dtype, W.data, cols, x, bias, y, r0, r1);
    });
  } else {
    for_row_ranges(rows, pool, [&](int64_t r0, int64_t r1) {
      detail::gemm_rows(W.dtype, W.data, rows, cols, x, n_tokens, bias, y, r0, r1);
    });
  }
}

float dot_f32(const float* a, const float* b, int64_t n) {
  return n > 0 ? detail::dot_f32(a, b, n) : 0.0f;
}

void axpy_f32(float alpha, const float* x, float* y, int64_t n) {
  if (n > 0) detail::axpy_f32(alpha, x, y, n);
}

}  // namespace kvc::cpu
