// bf16 x bf16 dot products with VDPBF16PS (AVX512_BF16: Intel Cooper Lake / Sapphire Rapids and
// later, AMD Zen 4 and later). Highway 1.0.3 does not emit this instruction, so these few
// functions are written with intrinsics, compiled for that ISA through function attributes
// (the rest of the binary stays baseline x86-64) and only called after a cpuid check.
//
// Per output element: one 16-lane fp32 accumulator; each instruction adds the two products of
// an adjacent bf16 pair to a lane (products are exact in fp32). Columns past the last multiple of
// 32 are loaded with a zeroing mask, then the 16 lanes are summed in a fixed tree. As in the
// Highway kernels, decode and prefill give bitwise equal results.
#include <algorithm>

#include "cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KVC_HAVE_BF16_KERNELS 1
#define KVC_TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define KVC_HAVE_BF16_KERNELS 0
#endif

namespace kvc::cpu::detail {

#if KVC_HAVE_BF16_KERNELS
namespace {

constexpr int64_t kPair = 32;  // bf16 elements per 512-bit vector

// Sum of the 16 lanes in a fixed butterfly order. The all-ones-mask forms are used because
// GCC 12's unmasked ones (and _mm512_reduce_add_ps) trip -Wuninitialized in its own headers.
KVC_TARGET_BF16 inline float hsum(__m512 v) {
  const __mmask16 all = 0xffff;
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, 0x4e));  // other 256-bit half
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, 0xb1));  // neighbouring 128 bits
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, 0x4e));        // other 64 bits
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, 0xb1));        // neighbouring lane
  return _mm512_cvtss_f32(v);
}

// out[t * ldo + r] = dot(w row r, xb row t) (+ bias[r]); w rows stride `cols`, xb rows ldx.
template <int kR, int kT>
KVC_TARGET_BF16 inline void tile(const uint16_t* w, int64_t cols, const uint16_t* xb,
                                 int64_t ldx, const float* bias, float* out, int64_t ldo) {
  __m512 acc[kR][kT];
  for (int r = 0; r < kR; ++r)
    for (int t = 0; t < kT; ++t) acc[r][t] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + kPair <= cols; c += kPair) {
    __m512i xv[kT];
    for (int t = 0; t < kT; ++t) xv[t] = _mm512_loadu_si512(xb + t * ldx + c);
    for (int r = 0; r < kR; ++r) {
      const __m512i wv = _mm512_loadu_si512(w + r * cols + c);
      for (int t = 0; t < kT; ++t) {
        acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)wv, (__m512bh)xv[t]);
      }
    }
  }
  if (c < cols) {
    const __mmask32 m = _cvtu32_mask32(static_cast<uint32_t>((uint64_t{1} << (cols - c)) - 1));
    __m512i xv[kT];
    for (int t = 0; t < kT; ++t) xv[t] = _mm512_maskz_loadu_epi16(m, xb + t * ldx + c);
    for (int r = 0; r < kR; ++r) {
      const __m512i wv = _mm512_maskz_loadu_epi16(m, w + r * cols + c);
      for (int t = 0; t < kT; ++t) {
        acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)wv, (__m512bh)xv[t]);
      }
    }
  }
  for (int r = 0; r < kR; ++r) {
    for (int t = 0; t < kT; ++t) {
      float s = hsum(acc[r][t]);
      if (bias) s += bias[r];
      out[t * ldo + r] = s;
    }
  }
}

constexpr int kGemmRows = 4, kGemmTokens = 4;

}  // namespace

bool native_bf16_supported() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return ok;
}

KVC_TARGET_BF16 void matvec_rows_bf16_native(const uint16_t* w, int64_t cols, const uint16_t* xb,
                                             const float* bias, float* y, int64_t r0,
                                             int64_t r1) {
  constexpr int kR = static_cast<int>(kRowUnit);
  int64_t r = r0;
  for (; r + kR <= r1; r += kR) {
    tile<kR, 1>(w + r * cols, cols, xb, 0, bias ? bias + r : nullptr, y + r, 0);
  }
  for (; r < r1; ++r) tile<1, 1>(w + r * cols, cols, xb, 0, bias ? bias + r : nullptr, y + r, 0);
}

KVC_TARGET_BF16 void gemm_rows_bf16_native(const uint16_t* w, int64_t rows, int64_t cols,
                                           const uint16_t* xb, int64_t n_tokens,
                                           const float* bias, float* y, int64_t r0, int64_t r1) {
  // Tokens per outer block: keep that block of activations within ~512 KiB of L2.
  const int64_t token_block = std::clamp<int64_t>(
      (int64_t{512} << 10) / std::max<int64_t>(1, cols * 2) / kGemmTokens * kGemmTokens,
      kGemmTokens, 256);
  for (int64_t t0 = 0; t0 < n_tokens; t0 += token_block) {
    const int64_t t1 = std::min(n_tokens, t0 + token_block);
    for (int64_t r = r0; r < r1; r += kGemmRows) {
      const int64_t nr = std::min<int64_t>(kGemmRows, r1 - r);
      const uint16_t* wp = w + r * cols;
      const float* br = bias ? bias + r : nullptr;
      for (int64_t t = t0; t < t1; t += kGemmTokens) {
        const int64_t nt = std::min<int64_t>(kGemmTokens, t1 - t);
        float* out = y + t * rows + r;
        if (nr == kGemmRows && nt == kGemmTokens) {
          tile<kGemmRows, kGemmTokens>(wp, cols, xb + t * cols, cols, br, out, rows);
          continue;
        }
        for (int64_t i = 0; i < nr; ++i) {
          for (int64_t j = 0; j < nt; ++j) {
            tile<1, 1>(wp + i * cols, cols, xb + (t + j) * cols, cols, br ? br + i : nullptr,
                       out + j * rows + i, rows);
          }
        }
      }
    }
  }
}

#else  // no AVX512_BF16 code on this architecture / compiler

bool native_bf16_supported() { return false; }
void matvec_rows_bf16_native(const uint16_t*, int64_t, const uint16_t*, const float*, float*,
                             int64_t, int64_t) {}
void gemm_rows_bf16_native(const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t,
                           const float*, float*, int64_t, int64_t) {}

#endif

}  // namespace kvc::cpu::detail
