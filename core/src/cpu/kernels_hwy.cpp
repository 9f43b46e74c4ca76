// Portable SIMD kernels, compiled once per Highway target (SSE4, AVX2, AVX-512, ...) and chosen
// at run time by HWY_DYNAMIC_DISPATCH.
//
// Every output element y[t, r] is accumulated the same way on a given target, whatever the tile
// it is computed in: one vector accumulator summing lane-wise over full vectors of columns in
// increasing order, a horizontal sum, then the leftover columns added one by one. That makes the
// decode (matvec) and prefill (gemm) paths bitwise equal and independent of the thread split.
//
// bf16 weights take one more step: a vector of 2N bf16 values is read as N 32-bit lanes, and
// one shift / one mask turn it into the N even and the N odd elements as fp32 (cheaper than
// widening two halves with shuffles). The activations are permuted to match, once per call:
// within each block of 2N columns, the N even ones then the N odd ones. The prefill panel is
// widened into the same permuted order, so both paths still perform the same operations.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/kernels_hwy.cpp"
#include <hwy/foreach_target.h>  // re-includes this file once per target

#include <hwy/aligned_allocator.h>
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <algorithm>
#include <vector>

#include "cpu/attention.h"
#include "cpu/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace kvc::cpu::detail::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Register tile of the prefill kernel: kGemmRows weight rows x kGemmTokens tokens of vector
// accumulators, plus kGemmTokens activation vectors and one weight vector live at once.
// AVX-512 has 32 vector registers (4 x 6: 24 + 6 + 1), the other targets 16 (2 x 5: 10 + 5 + 1).
#if HWY_TARGET <= HWY_AVX3
constexpr int kGemmRows = 4, kGemmTokens = 6;
#else
constexpr int kGemmRows = 2, kGemmTokens = 5;
#endif
// Cache blocking of the prefill kernel: columns per K block (a multiple of every target's
// 2 x lanes, so that bf16 column pairs never straddle a block), and weight rows per group.
// A token tile's activations for one K block (kGemmTokens x 2 KiB) stay in L1 while every row
// tile of the group passes over them; the group's weights for the block (64 x 2 KiB) in L2.
constexpr int64_t kGemmK = 1024;
constexpr int64_t kGemmGroupRows = 64;

// One vector of weights as fp32 (exact widening).
HWY_INLINE VF LoadW(DF df, const float* HWY_RESTRICT p) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadW(DF df, const hwy::bfloat16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::bfloat16_t, DF> dbf;
  return hn::PromoteTo(df, hn::LoadU(dbf, p));
}
HWY_INLINE VF LoadW(DF df, const hwy::float16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, p));
}

HWY_INLINE float ScalarW(const float* p) { return *p; }
HWY_INLINE float ScalarW(const hwy::bfloat16_t* p) {
  uint16_t b;
  std::memcpy(&b, p, 2);
  return bf16_to_f32(b);
}
HWY_INLINE float ScalarW(const hwy::float16_t* p) {
  uint16_t b;
  std::memcpy(&b, p, 2);
  return f16_to_f32(b);
}

// Decode streams each weight row once, a tile of rows side by side. The hardware prefetcher
// alone keeps too few cache-line misses in flight for the bf16 kernel (each line costs more
// instructions than in fp32, so the out-of-order window reaches less far ahead, and short rows
// end before the prefetcher has ramped up). A software prefetch into L2 a few lines ahead of
// each row, continuing into the same row of the next tile near a row's end, raised the bf16
// rate by 10-20 % and the fp32 rate by a few % (docs/performance.md). Prefetches past the
// end of the matrix are harmless hints.
constexpr int64_t kPrefetchBytes = 512;
template <class WT>
HWY_INLINE void PrefetchAhead(const WT* w, int r, int tile_rows, int64_t cols, int64_t c) {
  int64_t ahead = c + kPrefetchBytes / static_cast<int64_t>(sizeof(WT));
  if (ahead >= cols) ahead += (tile_rows - 1) * cols;  // row r of the next tile
  // Address arithmetic on integers: the target may lie past the end of the allocation.
  const uintptr_t target = reinterpret_cast<uintptr_t>(w) +
                           static_cast<uintptr_t>(r * cols + ahead) * sizeof(WT);
  __builtin_prefetch(reinterpret_cast<const void*>(target), /*rw=*/0, /*locality=*/2);
}

// 2N bf16 values -> the N even-indexed and the N odd-indexed ones as fp32 (exact).
HWY_INLINE void WidenPairs(DF df, const hwy::bfloat16_t* HWY_RESTRICT p, VF& even, VF& odd) {
  const hn::RebindToUnsigned<DF> du;
  const auto v = hn::LoadU(du, reinterpret_cast<const uint32_t*>(p));
  even = hn::BitCast(df, hn::ShiftLeft<16>(v));  // little endian: element 2i is the low half
  odd = hn::BitCast(df, hn::And(v, hn::Set(du, 0xFFFF0000u)));
}

// Column permutation used with bf16 weights: within each full block of 2N columns, the even
// columns then the odd ones; the columns after the last full block keep their order.
void PermutePairs(const float* HWY_RESTRICT x, int64_t cols, float* HWY_RESTRICT out) {
  const int64_t n = static_cast<int64_t>(hn::Lanes(DF()));
  int64_t c = 0;
  for (; c + 2 * n <= cols; c += 2 * n) {
    for (int64_t i = 0; i < n; ++i) {
      out[c + i] = x[c + 2 * i];
      out[c + n + i] = x[c + 2 * i + 1];
    }
  }
  for (; c < cols; ++c) out[c] = x[c];
}

// out[t * ldo + r] = dot(w row r, x row t) (+ bias[r]) for r < kR, t < kT.
// w rows have stride `cols`, x rows stride ldx.
template <int kR, int kT, class WT>
HWY_INLINE void Tile(const WT* HWY_RESTRICT w, int64_t cols, const float* HWY_RESTRICT x,
                     int64_t ldx, const float* HWY_RESTRICT bias, float* HWY_RESTRICT out,
                     int64_t ldo) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  VF acc[kR][kT];
  for (int r = 0; r < kR; ++r)
    for (int t = 0; t < kT; ++t) acc[r][t] = hn::Zero(df);
  int64_t c = 0;
  for (; c + n <= cols; c += n) {
    VF xv[kT];
    for (int t = 0; t < kT; ++t) xv[t] = hn::LoadU(df, x + t * ldx + c);
    for (int r = 0; r < kR; ++r) {
      if (kT == 1) PrefetchAhead(w, r, kR, cols, c);
      const VF wv = LoadW(df, w + r * cols + c);
      for (int t = 0; t < kT; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < kR; ++r) {
    for (int t = 0; t < kT; ++t) {
      float s = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
      for (int64_t k = c; k < cols; ++k) s += ScalarW(w + r * cols + k) * x[t * ldx + k];
      if (bias) s += bias[r];
      out[t * ldo + r] = s;
    }
  }
}

template <class WT>
void MatvecRowsT(const WT* HWY_RESTRICT w, int64_t cols, const float* HWY_RESTRICT x,
                 const float* HWY_RESTRICT bias, float* HWY_RESTRICT y, int64_t r0, int64_t r1) {
  constexpr int kR = static_cast<int>(kRowUnit);
  int64_t r = r0;
  for (; r + kR <= r1; r += kR) {
    Tile<kR, 1>(w + r * cols, cols, x, 0, bias ? bias + r : nullptr, y + r, 0);
  }
  for (; r < r1; ++r) Tile<1, 1>(w + r * cols, cols, x, 0, bias ? bias + r : nullptr, y + r, 0);
}

// Decode tile for bf16 weights: xp is x permuted by PermutePairs. Same operations, in the same
// order, as Tile<kR, 1> on the rows widened by WidenPanelPairs.
template <int kR>
HWY_INLINE void TilePairs(const hwy::bfloat16_t* HWY_RESTRICT w, int64_t cols,
                          const float* HWY_RESTRICT xp, const float* HWY_RESTRICT bias,
                          float* HWY_RESTRICT out) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  VF acc[kR];
  for (int r = 0; r < kR; ++r) acc[r] = hn::Zero(df);
  int64_t c = 0;
  for (; c + 2 * n <= cols; c += 2 * n) {
    const VF xe = hn::LoadU(df, xp + c), xo = hn::LoadU(df, xp + c + n);
    for (int r = 0; r < kR; ++r) {
      VF we, wo;
      PrefetchAhead(w, r, kR, cols, c);
      WidenPairs(df, w + r * cols + c, we, wo);
      acc[r] = hn::MulAdd(we, xe, acc[r]);
      acc[r] = hn::MulAdd(wo, xo, acc[r]);
    }
  }
  for (; c + n <= cols; c += n) {
    const VF xv = hn::LoadU(df, xp + c);
    for (int r = 0; r < kR; ++r) acc[r] = hn::MulAdd(LoadW(df, w + r * cols + c), xv, acc[r]);
  }
  for (int r = 0; r < kR; ++r) {
    float s = hn::GetLane(hn::SumOfLanes(df, acc[r]));
    for (int64_t k = c; k < cols; ++k) s += ScalarW(w + r * cols + k) * xp[k];
    if (bias) s += bias[r];
    out[r] = s;
  }
}

void MatvecRowsBf16(const hwy::bfloat16_t* HWY_RESTRICT w, int64_t cols,
                    const float* HWY_RESTRICT x, const float* HWY_RESTRICT bias,
                    float* HWY_RESTRICT y, int64_t r0, int64_t r1) {
  thread_local std::vector<float> xp;
  xp.resize(static_cast<size_t>(cols));
  PermutePairs(x, cols, xp.data());
  constexpr int kR = static_cast<int>(kRowUnit);
  int64_t r = r0;
  for (; r + kR <= r1; r += kR) {
    TilePairs<kR>(w + r * cols, cols, xp.data(), bias ? bias + r : nullptr, y + r);
  }
  for (; r < r1; ++r) TilePairs<1>(w + r * cols, cols, xp.data(), bias ? bias + r : nullptr, y + r);
}

void MatvecRows(DType dtype, const void* w, int64_t cols, const float* x, const float* bias,
                float* y, int64_t r0, int64_t r1) {
  switch (dtype) {
    case DType::F32:
      return MatvecRowsT(static_cast<const float*>(w), cols, x, bias, y, r0, r1);
    case DType::BF16:
      return MatvecRowsBf16(static_cast<const hwy::bfloat16_t*>(w), cols, x, bias, y, r0, r1);
    case DType::F16:
      return MatvecRowsT(static_cast<const hwy::float16_t*>(w), cols, x, bias, y, r0, r1);
  }
}

template <class WT>
void WidenRows(const WT* HWY_RESTRICT w, int64_t count, float* HWY_RESTRICT out) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + n <= count; i += n) hn::StoreU(LoadW(df, w + i), df, out + i);
  for (; i < count; ++i) out[i] = ScalarW(w + i);
}

// Widens `nr` bf16 rows into fp32 with each row's columns permuted as by PermutePairs.
void WidenPanelPairs(const hwy::bfloat16_t* HWY_RESTRICT w, int nr, int64_t cols,
                     float* HWY_RESTRICT out) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  for (int r = 0; r < nr; ++r, w += cols, out += cols) {
    int64_t c = 0;
    for (; c + 2 * n <= cols; c += 2 * n) {
      VF we, wo;
      WidenPairs(df, w + c, we, wo);
      hn::StoreU(we, df, out + c);
      hn::StoreU(wo, df, out + c + n);
    }
    for (; c < cols; ++c) out[c] = ScalarW(w + c);
  }
}

// Accumulates `steps` vector steps of a packed kR x kT tile into the vector accumulators
// acc[r * ld_acc + t] (zeroed first with `first`). wp holds, per step, the kR weight vectors;
// xp, per step, the kT activation vectors (the layouts PackWeights and PackTokens write). Per
// output: the same multiply-adds in the same order as Tile over the whole row, so the lane
// sums the caller reduces match the decode kernel bit for bit.
// `w_step` is the distance between one step's weight vectors and the next (kR * lanes when
// packed), `w_row` between two rows' (lanes when packed; the row stride when read in place).
template <int kR, int kT>
HWY_INLINE void AccumulateTile(const float* HWY_RESTRICT wp, int64_t w_step, int64_t w_row,
                               const float* HWY_RESTRICT xp, int64_t steps, bool first,
                               float* HWY_RESTRICT acc_io, int64_t ld_acc) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  VF acc[kR][kT];
  for (int r = 0; r < kR; ++r)
    for (int t = 0; t < kT; ++t)
      acc[r][t] = first ? hn::Zero(df) : hn::Load(df, acc_io + (r * ld_acc + t) * n);
  for (int64_t s = 0; s < steps; ++s, wp += w_step, xp += kT * n) {
    VF xv[kT];
    for (int t = 0; t < kT; ++t) xv[t] = hn::Load(df, xp + t * n);
    for (int r = 0; r < kR; ++r) {
      const VF wv = hn::LoadU(df, wp + r * w_row);
      for (int t = 0; t < kT; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < kR; ++r)
    for (int t = 0; t < kT; ++t) hn::Store(acc[r][t], df, acc_io + (r * ld_acc + t) * n);
}

// One vector of `count` rows of `src` (stride ld), from column c, as fp32, per step:
// out[(step * count + row) * n + lane]. Rows past `valid` are zero.
template <class WT>
HWY_INLINE void PackPanel(const WT* HWY_RESTRICT src, int64_t ld, int count, int valid,
                          int64_t k0, int64_t kc, bool pairs, float* HWY_RESTRICT out) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t c = 0; c < kc; c += (pairs ? 2 * n : n)) {
    const int64_t step = c / n;
    for (int i = 0; i < count; ++i) {
      float* dst = out + (step * count + i) * n;
      if (i >= valid) {
        hn::Store(hn::Zero(df), df, dst);
        if (pairs) hn::Store(hn::Zero(df), df, dst + count * n);
        continue;
      }
      const WT* row = src + i * ld + k0 + c;
      if constexpr (std::is_same_v<WT, hwy::bfloat16_t>) {
        if (pairs) {  // the decode kernel's pairing: even columns, then odd ones
          VF even, odd;
          WidenPairs(df, row, even, odd);
          hn::Store(even, df, dst);
          hn::Store(odd, df, dst + count * n);
          continue;
        }
      }
      hn::Store(LoadW(df, row), df, dst);
    }
  }
}

// y[t * rows + r] for the rows [r0, r1) and every token: x (stride cols) times the weight rows.
// Loops: tokens in blocks; per block, the activations packed once (token tiles, column steps);
// rows in groups; per group, K blocks of kGemmK columns whose weights are packed (and widened)
// once; per K block, token tiles outside and row tiles inside, so that a token tile's packed
// activations stay in L1 and the group's packed weights in L2, and every tile reads two
// sequential streams (no power-of-two strides fighting over L1 sets). The lane sums of every
// output live in `acc` between K blocks and are reduced at the end exactly as Tile reduces
// them. With bf16 weights the columns of each 2 x lanes block are paired as in TilePairs.
template <class WT>
void GemmRowsT(const WT* HWY_RESTRICT w, int64_t rows, int64_t cols, const float* x,
               int64_t n_tokens, const float* bias, float* y, int64_t r0, int64_t r1) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  constexpr bool kBf16 = std::is_same_v<WT, hwy::bfloat16_t>;
  const int64_t vec_end = cols / n * n;  // columns the vector loop covers; the rest: scalars
  const int64_t pair_end = kBf16 ? cols / (2 * n) * (2 * n) : 0;  // bf16: paired columns
  constexpr int64_t kTokenBlock = 256;  // the forward pass never asks for more at once
  const int64_t k_blocks = (vec_end + kGemmK - 1) / kGemmK;
  const int64_t tiles_max = (kTokenBlock + kGemmTokens - 1) / kGemmTokens;
  thread_local hwy::AlignedFreeUniquePtr<float[]> xpack, wpack, accs;
  thread_local size_t xpack_size = 0, wpack_size = 0, accs_size = 0;
  const auto ensure = [](hwy::AlignedFreeUniquePtr<float[]>& p, size_t& size, size_t want) {
    if (want > size) {
      p = hwy::AllocateAligned<float>(want);
      size = want;
    }
  };
  // Packed activations: per K block and token tile, [step][token][lane].
  const size_t x_tile = static_cast<size_t>(kGemmK * kGemmTokens);
  ensure(xpack, xpack_size, static_cast<size_t>(k_blocks * tiles_max) * x_tile + 1);
  // Packed weights of a group's K block: per row tile, [step][row][lane].
  const int64_t row_tiles = (kGemmGroupRows + kGemmRows - 1) / kGemmRows;
  ensure(wpack, wpack_size, static_cast<size_t>(row_tiles * kGemmRows * kGemmK) + 1);
  ensure(accs, accs_size,
         static_cast<size_t>(row_tiles * kGemmRows * tiles_max * kGemmTokens * n) + 1);

  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenBlock) {
    const int64_t nt_block = std::min(kTokenBlock, n_tokens - t0);
    const int64_t tiles = (nt_block + kGemmTokens - 1) / kGemmTokens;
    const int64_t ld_acc = tiles * kGemmTokens;  // tokens per acc row (tiles padded)
    const float* xb = x + t0 * cols;
    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      const int64_t k0 = kb * kGemmK, kc = std::min(kGemmK, vec_end - k0);
      for (int64_t tt = 0; tt < tiles; ++tt) {
        const int valid = static_cast<int>(std::min<int64_t>(kGemmTokens, nt_block - tt * kGemmTokens));
        float* dst = xpack.get() + (kb * tiles_max + tt) * x_tile;
        const float* src = xb + tt * kGemmTokens * cols;
        // bf16: pair the activations like the weights (within [0, pair_end) only).
        const int64_t paired = kBf16 ? std::max<int64_t>(0, std::min(kc, pair_end - k0)) : 0;
        if (paired > 0) {
          for (int64_t c = 0; c < paired; c += 2 * n)
            for (int i = 0; i < kGemmTokens; ++i) {
              float* d = dst + ((c / n) * kGemmTokens + i) * n;
              for (int64_t l = 0; l < n; ++l) {
                d[l] = i < valid ? src[i * cols + k0 + c + 2 * l] : 0.0f;
                d[kGemmTokens * n + l] = i < valid ? src[i * cols + k0 + c + 2 * l + 1] : 0.0f;
              }
            }
        }
        PackPanel(src, cols, kGemmTokens, valid, k0 + paired, kc - paired, false,
                  dst + (paired / n) * kGemmTokens * n);
      }
    }
    for (int64_t g0 = r0; g0 < r1; g0 += kGemmGroupRows) {
      const int64_t ng = std::min(kGemmGroupRows, r1 - g0);
      const int64_t tiles_r = (ng + kGemmRows - 1) / kGemmRows;
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        const int64_t k0 = kb * kGemmK, kc = std::min(kGemmK, vec_end - k0);
        const int64_t steps = kc / n;
        const int64_t paired = kBf16 ? std::max<int64_t>(0, std::min(kc, pair_end - k0)) : 0;
        // f32 weights are read in place when the group has whole row tiles (four rows at a
        // row stride share L1 sets without evicting each other); others are packed, widened.
        const bool in_place = std::is_same_v<WT, float> && ng % kGemmRows == 0;
        if (!in_place) {
          for (int64_t rt = 0; rt < tiles_r; ++rt) {
            const int valid =
                static_cast<int>(std::min<int64_t>(kGemmRows, ng - rt * kGemmRows));
            float* dst = wpack.get() + rt * kGemmRows * kGemmK;
            const WT* src = w + (g0 + rt * kGemmRows) * cols;
            if (paired > 0) PackPanel(src, cols, kGemmRows, valid, k0, paired, true, dst);
            PackPanel(src, cols, kGemmRows, valid, k0 + paired, kc - paired, false,
                      dst + (paired / n) * kGemmRows * n);
          }
        }
        for (int64_t tt = 0; tt < tiles; ++tt) {
          const float* xp = xpack.get() + (kb * tiles_max + tt) * x_tile;
          float* acc_t = accs.get() + tt * kGemmTokens * n;
          for (int64_t rt = 0; rt < tiles_r; ++rt) {
            float* a = acc_t + rt * kGemmRows * ld_acc * n;
            if (in_place) {
              const float* wr = reinterpret_cast<const float*>(w) + (g0 + rt * kGemmRows) * cols;
              AccumulateTile<kGemmRows, kGemmTokens>(wr + k0, n, cols, xp, steps, kb == 0, a,
                                                     ld_acc);
            } else {
              AccumulateTile<kGemmRows, kGemmTokens>(wpack.get() + rt * kGemmRows * kGemmK,
                                                     kGemmRows * n, n, xp, steps, kb == 0, a,
                                                     ld_acc);
            }
          }
        }
      }
      // Reduce each output as Tile does: lane sum, the scalar columns, the bias (token-major,
      // so that y is written along its rows).
      for (int64_t t = 0; t < nt_block; ++t) {
        float* yt = y + (t0 + t) * rows + g0;
        for (int64_t r = 0; r < ng; ++r) {
          float s = vec_end > 0 ? hn::GetLane(hn::SumOfLanes(
                                      df, hn::Load(df, accs.get() + (r * ld_acc + t) * n)))
                                : 0.0f;
          const WT* wr = w + (g0 + r) * cols;
          for (int64_t k = vec_end; k < cols; ++k) s += ScalarW(wr + k) * xb[t * cols + k];
          if (bias) s += bias[g0 + r];
          yt[r] = s;
        }
      }
    }
  }
}

void GemmRows(DType dtype, const void* w, int64_t rows, int64_t cols, const float* x,
              int64_t n_tokens, const float* bias, float* y, int64_t r0, int64_t r1) {
  switch (dtype) {
    case DType::F32:
      return GemmRowsT(static_cast<const float*>(w), rows, cols, x, n_tokens, bias, y, r0, r1);
    case DType::BF16:
      return GemmRowsT(static_cast<const hwy::bfloat16_t*>(w), rows, cols, x, n_tokens, bias, y,
                       r0, r1);
    case DType::F16:
      return GemmRowsT(static_cast<const hwy::float16_t*>(w), rows, cols, x, n_tokens, bias, y,
                       r0, r1);
  }
}

float DotF32(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t count) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  VF s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 4 * n <= count; i += 4 * n) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + n), hn::LoadU(df, b + i + n), s1);
    s2 = hn::MulAdd(hn::LoadU(df, a + i + 2 * n), hn::LoadU(df, b + i + 2 * n), s2);
    s3 = hn::MulAdd(hn::LoadU(df, a + i + 3 * n), hn::LoadU(df, b + i + 3 * n), s3);
  }
  for (; i + n <= count; i += n) s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < count; ++i) s += a[i] * b[i];
  return s;
}

void AxpyF32(float alpha, const float* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t count) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const VF va = hn::Set(df, alpha);
  int64_t i = 0;
  for (; i + n <= count; i += n) {
    hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
  }
  for (; i < count; ++i) y[i] += alpha * x[i];
}

// ---- Attention of one query over one head's cache (decode and prefill share these) ----
// Channel counts (head_dim, the rotary half) need not be multiples of the vector length:
// full vectors first, then up to 8-lane vectors, then single channels, in a fixed order.
using DF8 = hn::CappedTag<float, 8>;

// In decode, a head's cache was last read one token earlier, before the whole model's weights
// streamed through the caches: its rows come from memory. Each entry costs too few
// instructions for the out-of-order window to overlap many such misses, so the score loop
// prefetches the key and value rows of the entry kAttentionAhead places ahead (the values are
// read right after, by AttentionValues).
constexpr int64_t kAttentionAhead = 6;
HWY_INLINE void PrefetchEntry(const float* keys, const float* values, int32_t slot, int64_t hd) {
  const int64_t at = static_cast<int64_t>(slot) * hd;
  for (int64_t i = 0; i < hd; i += 16) {  // one prefetch per 64-byte line
    __builtin_prefetch(keys + at + i, 0, 3);
    if (values) __builtin_prefetch(values + at + i, 0, 3);
  }
}

// scores[r] = scale * <q, rope(key of entry r)> for r in [0, count). The query is already
// rotated; the key of entry r sits in keys[slots[r] * hd] without rotation and is rotated
// (rotate_half on its first 2 * half channels) with the cos/sin rows of position
// positions[r], or of position r when positions is null.
// `values` (may be null) are only prefetched.
void AttentionScores(const float* HWY_RESTRICT q, const float* HWY_RESTRICT keys,
                     const float* HWY_RESTRICT values, const int32_t* HWY_RESTRICT slots,
                     const int64_t* HWY_RESTRICT positions,
                     const float* HWY_RESTRICT cos_table, const float* HWY_RESTRICT sin_table,
                     int64_t half, int64_t hd, float scale, int64_t count,
                     float* HWY_RESTRICT scores) {
  const DF df;
  const DF8 d8;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const int64_t n8 = static_cast<int64_t>(hn::Lanes(d8));
  const int64_t rot = 2 * half;
  // One rotary chunk of `lanes` channels starting at i (any tag D).
  const auto rotary_chunk = [&](auto d, const float* k, const float* c, const float* s,
                                int64_t i, auto acc) {
    const auto k1 = hn::LoadU(d, k + i), k2 = hn::LoadU(d, k + half + i);
    const auto cv = hn::LoadU(d, c + i), sv = hn::LoadU(d, s + i);
    const auto r1 = hn::NegMulAdd(k2, sv, hn::Mul(k1, cv));  // k1 c - k2 s
    const auto r2 = hn::MulAdd(k1, sv, hn::Mul(k2, cv));     // k2 c + k1 s
    acc = hn::MulAdd(hn::LoadU(d, q + i), r1, acc);
    return hn::MulAdd(hn::LoadU(d, q + half + i), r2, acc);
  };
  for (int64_t r = 0; r < count; ++r) {
    if (r + kAttentionAhead < count) PrefetchEntry(keys, values, slots[r + kAttentionAhead], hd);
    const float* k = keys + static_cast<int64_t>(slots[r]) * hd;
    const int64_t pos = positions ? positions[r] : r;
    const float* c = cos_table + pos * half;
    const float* s = sin_table + pos * half;
    VF acc = hn::Zero(df);
    auto acc8 = hn::Zero(d8);
    float tail = 0.0f;
    int64_t i = 0;
    for (; i + n <= half; i += n) acc = rotary_chunk(df, k, c, s, i, acc);
    for (; i + n8 <= half; i += n8) acc8 = rotary_chunk(d8, k, c, s, i, acc8);
    for (; i < half; ++i) {
      const float k1 = k[i] * c[i] - k[i + half] * s[i];
      const float k2 = k[i + half] * c[i] + k[i] * s[i];
      tail += q[i] * k1 + q[i + half] * k2;
    }
    i = rot;
    for (; i + n <= hd; i += n) acc = hn::MulAdd(hn::LoadU(df, q + i), hn::LoadU(df, k + i), acc);
    for (; i + n8 <= hd; i += n8)
      acc8 = hn::MulAdd(hn::LoadU(d8, q + i), hn::LoadU(d8, k + i), acc8);
    for (; i < hd; ++i) tail += q[i] * k[i];
    const float sum = hn::GetLane(hn::SumOfLanes(df, acc)) +
                      hn::GetLane(hn::SumOfLanes(d8, acc8)) + tail;
    scores[r] = sum * scale;
  }
}

// scores[q * lds + r] = scale * <queries[q], column r of kt> for q < nq and the keys query q
// sees, r < first_count + q (the rest of its vector may be written too): kt holds the keys
// already rotated, transposed ([hd][ldk], ldk a multiple of the lanes, padding zero).
// Vectorized over keys, four queries at a time sharing each load of keys.
void AttentionScoresBlock(const float* HWY_RESTRICT queries, int64_t nq, int64_t hd,
                          const float* HWY_RESTRICT kt, int64_t ldk, int64_t first_count,
                          float scale, float* HWY_RESTRICT scores, int64_t lds) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  constexpr int kQ = 4;
  const VF vscale = hn::Set(df, scale);
  int64_t q0 = 0;
  // Keys a query group needs: up to its last query's own, rounded up to whole vectors.
  const auto keys_for = [&](int64_t last_query) {
    return std::min(ldk, (first_count + last_query + n - 1) / n * n);
  };
  for (; q0 + kQ <= nq; q0 += kQ) {
    const float* qb = queries + q0 * hd;
    const int64_t end = keys_for(q0 + kQ - 1);
    for (int64_t r = 0; r < end; r += n) {
      VF acc[kQ];
      for (int j = 0; j < kQ; ++j) acc[j] = hn::Zero(df);
      for (int64_t d = 0; d < hd; ++d) {
        const VF kv = hn::LoadU(df, kt + d * ldk + r);
        for (int j = 0; j < kQ; ++j) acc[j] = hn::MulAdd(hn::Set(df, qb[j * hd + d]), kv, acc[j]);
      }
      for (int j = 0; j < kQ; ++j) hn::StoreU(hn::Mul(acc[j], vscale), df, scores + (q0 + j) * lds + r);
    }
  }
  for (; q0 < nq; ++q0) {
    const float* qb = queries + q0 * hd;
    const int64_t end = keys_for(q0);
    for (int64_t r = 0; r < end; r += n) {
      VF acc = hn::Zero(df);
      for (int64_t d = 0; d < hd; ++d)
        acc = hn::MulAdd(hn::Set(df, qb[d]), hn::LoadU(df, kt + d * ldk + r), acc);
      hn::StoreU(hn::Mul(acc, vscale), df, scores + q0 * lds + r);
    }
  }
}

// The lanes of the best target (the padding AttentionScoresBlock needs).
int64_t Lanes() { return static_cast<int64_t>(hn::Lanes(DF())); }

// scores[r] = exp(scores[r] - max) over [0, count); returns their sum (count >= 1).
float SoftmaxExp(float* HWY_RESTRICT scores, int64_t count) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  VF vmax = hn::Set(df, -HUGE_VALF);
  int64_t r = 0;
  for (; r + n <= count; r += n) vmax = hn::Max(vmax, hn::LoadU(df, scores + r));
  float max_score = hn::GetLane(hn::MaxOfLanes(df, vmax));
  for (; r < count; ++r) max_score = std::max(max_score, scores[r]);
  const VF vm = hn::Set(df, max_score);
  VF sum = hn::Zero(df);
  for (r = 0; r + n <= count; r += n) {
    const VF e = hn::Exp(df, hn::Sub(hn::LoadU(df, scores + r), vm));
    hn::StoreU(e, df, scores + r);
    sum = hn::Add(sum, e);
  }
  if (r < count) {
    // The tail goes through the same vector exp: padded with -inf, whose exp is 0.
    HWY_ALIGN float buf[hn::MaxLanes(df)];
    const int64_t m = count - r;
    for (int64_t j = 0; j < n; ++j) buf[j] = j < m ? scores[r + j] : -HUGE_VALF;
    const VF e = hn::Exp(df, hn::Sub(hn::Load(df, buf), vm));
    hn::Store(e, df, buf);
    sum = hn::Add(sum, e);
    for (int64_t j = 0; j < m; ++j) scores[r + j] = buf[j];
  }
  return hn::GetLane(hn::SumOfLanes(df, sum));
}

// out[0, hd) = sum over r of probs[r] * (value of entry r), the values at values[slots[r] * hd].
// AttentionValues over the channels [from, hd).
void AttentionValuesFrom(const float* HWY_RESTRICT probs, const float* HWY_RESTRICT values,
                         const int32_t* HWY_RESTRICT slots, int64_t hd, int64_t count,
                         int64_t from, float* HWY_RESTRICT out) {
  const DF df;
  const DF8 d8;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const int64_t n8 = static_cast<int64_t>(hn::Lanes(d8));
  const auto channels = [&](auto d, int64_t i) {
    auto acc = hn::Zero(d);
    for (int64_t r = 0; r < count; ++r) {
      const float* v = values + static_cast<int64_t>(slots[r]) * hd + i;
      acc = hn::MulAdd(hn::Set(d, probs[r]), hn::LoadU(d, v), acc);
    }
    hn::StoreU(acc, d, out + i);
  };
  int64_t i = from;
  for (; i + n <= hd; i += n) channels(df, i);
  for (; i + n8 <= hd; i += n8) channels(d8, i);
  for (; i < hd; ++i) {
    float acc = 0.0f;
    for (int64_t r = 0; r < count; ++r) acc += probs[r] * values[slots[r] * hd + i];
    out[i] = acc;
  }
}

void AttentionValues(const float* HWY_RESTRICT probs, const float* HWY_RESTRICT values,
                     const int32_t* HWY_RESTRICT slots, int64_t hd, int64_t count,
                     float* HWY_RESTRICT out) {
  AttentionValuesFrom(probs, values, slots, hd, count, 0, out);
}

// out[q * ldo + i] = sum over r < first_count + q of probs[q * ldp + r] * value(slots[r])[i]
// for q < nq and i < hd (query q sees one key more than query q - 1); each sum in the order
// of r, as AttentionValues adds them. Per key, up to four channel vectors of the value row
// are loaded once for four queries (whose probabilities past their own keys must be zero).
void AttentionValuesBlock(const float* HWY_RESTRICT probs, int64_t ldp, int64_t nq,
                          const float* HWY_RESTRICT values, const int32_t* HWY_RESTRICT slots,
                          int64_t hd, int64_t first_count, float* HWY_RESTRICT out,
                          int64_t ldo) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  constexpr int kQ = 4, kC = 4;
  const int64_t vec_hd = hd / n * n;
  for (int64_t q0 = 0; q0 < nq; q0 += kQ) {
    const int nqt = static_cast<int>(std::min<int64_t>(kQ, nq - q0));
    const int64_t count = first_count + q0 + nqt - 1;  // the group's last query sees the most
    for (int64_t i0 = 0; i0 < vec_hd; i0 += kC * n) {
      const int nc = static_cast<int>(std::min<int64_t>(kC, (vec_hd - i0) / n));
      VF acc[kQ][kC];
      for (int j = 0; j < kQ; ++j)
        for (int c = 0; c < kC; ++c) acc[j][c] = hn::Zero(df);
      for (int64_t r = 0; r < count; ++r) {
        const float* v = values + static_cast<int64_t>(slots[r]) * hd + i0;
        VF vv[kC];
        for (int c = 0; c < nc; ++c) vv[c] = hn::LoadU(df, v + c * n);
        for (int j = 0; j < nqt; ++j) {
          const VF p = hn::Set(df, probs[(q0 + j) * ldp + r]);
          for (int c = 0; c < nc; ++c) acc[j][c] = hn::MulAdd(p, vv[c], acc[j][c]);
        }
      }
      for (int j = 0; j < nqt; ++j)
        for (int c = 0; c < nc; ++c) hn::StoreU(acc[j][c], df, out + (q0 + j) * ldo + i0 + c * n);
    }
    // Channels past the last full vector, as AttentionValues does them (narrower vectors
    // first): per query.
    if (vec_hd < hd)
      for (int j = 0; j < nqt; ++j)
        AttentionValuesFrom(probs + (q0 + j) * ldp, values, slots, hd, count, vec_hd,
                            out + (q0 + j) * ldo);
  }
}


// Exact-erf GELU in place: x <- 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2).
// erfc(z) for z = |x| / sqrt 2 uses the Chebyshev fit erfc(z) = t exp(-z^2 + P(t)),
// t = 1 / (1 + z / 2), P of degree 9, whose relative error is below 1.2e-7 for every z >= 0
// (Press et al., Numerical Recipes, "erfcc"). Then x < 0: 0.5 x erfc(z), else x - 0.5 x erfc(z).
// Measured error (tests/cpu/gelu_test.cpp): at most 7 fp32 ulps of GELU(x) for |x| <= 2, 16 for
// |x| <= 4; beyond, in the negative tail where GELU(x) is tiny, the exponent's rounding adds
// up to x^2 / 2 ulps with FMA and x^2 without. (The former scalar 0.5 x (1 + erff(x / sqrt 2))
// lost the whole tail to cancellation.)
template <class D>
HWY_INLINE hn::Vec<D> GeluVec(D d, hn::Vec<D> x) {
  const auto z = hn::Mul(hn::Abs(x), hn::Set(d, 0.70710678118654752440f));
  const auto t = hn::Div(hn::Set(d, 1.0f), hn::MulAdd(z, hn::Set(d, 0.5f), hn::Set(d, 1.0f)));
  auto p = hn::Set(d, 0.17087277f);
  p = hn::MulAdd(p, t, hn::Set(d, -0.82215223f));
  p = hn::MulAdd(p, t, hn::Set(d, 1.48851587f));
  p = hn::MulAdd(p, t, hn::Set(d, -1.13520398f));
  p = hn::MulAdd(p, t, hn::Set(d, 0.27886807f));
  p = hn::MulAdd(p, t, hn::Set(d, -0.18628806f));
  p = hn::MulAdd(p, t, hn::Set(d, 0.09678418f));
  p = hn::MulAdd(p, t, hn::Set(d, 0.37409196f));
  p = hn::MulAdd(p, t, hn::Set(d, 1.00002368f));
  p = hn::MulAdd(p, t, hn::Set(d, -1.26551223f));
  // exp(P - z^2) with z^2 = x^2 / 2 formed from x itself (exact halving), not from the rounded z.
  const auto half_x = hn::Mul(hn::Set(d, 0.5f), x);
  const auto erfc = hn::Mul(t, hn::Exp(d, hn::NegMulAdd(half_x, x, p)));
  const auto half_x_erfc = hn::Mul(half_x, erfc);
  // x >= 0 takes x - 0.5 x erfc; a huge x keeps x itself (erfc is 0 there, and inf * 0 is NaN).
  const auto pos = hn::IfThenElse(hn::Gt(x, hn::Set(d, 10.0f)), x, hn::Sub(x, half_x_erfc));
  return hn::IfThenElse(hn::Lt(x, hn::Zero(d)), half_x_erfc, pos);
}

void GeluInPlace(float* HWY_RESTRICT x, int64_t count) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + n <= count; i += n) hn::StoreU(GeluVec(df, hn::LoadU(df, x + i)), df, x + i);
  if (i < count) {
    // The tail goes through the same vector code, so every element gets the same arithmetic.
    HWY_ALIGN float buf[hn::MaxLanes(df)] = {};
    const int64_t m = count - i;
    for (int64_t j = 0; j < m; ++j) buf[j] = x[i + j];
    hn::Store(GeluVec(df, hn::Load(df, buf)), df, buf);
    for (int64_t j = 0; j < m; ++j) x[i + j] = buf[j];
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace kvc::cpu::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvc::cpu::detail {

HWY_EXPORT(MatvecRows);
HWY_EXPORT(GemmRows);
HWY_EXPORT(DotF32);
HWY_EXPORT(AxpyF32);
HWY_EXPORT(TargetName);
HWY_EXPORT(AttentionScores);
HWY_EXPORT(SoftmaxExp);
HWY_EXPORT(AttentionValues);
HWY_EXPORT(GeluInPlace);
HWY_EXPORT(AttentionScoresBlock);
HWY_EXPORT(AttentionValuesBlock);
HWY_EXPORT(Lanes);

void matvec_rows(DType dtype, const void* w, int64_t cols, const float* x, const float* bias,
                 float* y, int64_t r0, int64_t r1) {
  HWY_DYNAMIC_DISPATCH(MatvecRows)(dtype, w, cols, x, bias, y, r0, r1);
}
void gemm_rows(DType dtype, const void* w, int64_t rows, int64_t cols, const float* x,
               int64_t n_tokens, const float* bias, float* y, int64_t r0, int64_t r1) {
  HWY_DYNAMIC_DISPATCH(GemmRows)(dtype, w, rows, cols, x, n_tokens, bias, y, r0, r1);
}
float dot_f32(const float* a, const float* b, int64_t n) {
  return HWY_DYNAMIC_DISPATCH(DotF32)(a, b, n);
}
void axpy_f32(float alpha, const float* x, float* y, int64_t n) {
  HWY_DYNAMIC_DISPATCH(AxpyF32)(alpha, x, y, n);
}
const char* target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace kvc::cpu::detail

// cpu/attention.h: the public entry points, dispatched here once.
namespace kvc::cpu {

void attention_scores(const float* q, const float* keys, const float* values,
                      const int32_t* slots, const int64_t* positions, const float* cos_table,
                      const float* sin_table, int64_t half, int64_t head_dim, float scale,
                      int64_t count, float* scores) {
  if (count <= 0) return;
  HWY_DYNAMIC_DISPATCH(detail::AttentionScores)(q, keys, values, slots, positions, cos_table,
                                                sin_table, half, head_dim, scale, count, scores);
}

float softmax_exp(float* scores, int64_t count) {
  return count > 0 ? HWY_DYNAMIC_DISPATCH(detail::SoftmaxExp)(scores, count) : 0.0f;
}

void attention_values(const float* probs, const float* values, const int32_t* slots,
                      int64_t head_dim, int64_t count, float* out) {
  if (count <= 0) {
    std::fill(out, out + head_dim, 0.0f);
    return;
  }
  HWY_DYNAMIC_DISPATCH(detail::AttentionValues)(probs, values, slots, head_dim, count, out);
}

void gelu(float* x, int64_t count) {
  if (count > 0) HWY_DYNAMIC_DISPATCH(detail::GeluInPlace)(x, count);
}

void attention_scores_block(const float* queries, int64_t n_queries, int64_t head_dim,
                            const float* keys_t, int64_t ld_keys, int64_t first_count,
                            float scale, float* scores, int64_t ld_scores) {
  if (n_queries <= 0 || ld_keys <= 0) return;
  HWY_DYNAMIC_DISPATCH(detail::AttentionScoresBlock)(queries, n_queries, head_dim, keys_t,
                                                     ld_keys, first_count, scale, scores,
                                                     ld_scores);
}

int64_t attention_key_padding() { return HWY_DYNAMIC_DISPATCH(detail::Lanes)(); }

void attention_values_block(const float* probs, int64_t ld_probs, int64_t n_queries,
                            const float* values, const int32_t* slots, int64_t head_dim,
                            int64_t first_count, float* out, int64_t ld_out) {
  if (n_queries <= 0 || first_count <= 0) return;
  HWY_DYNAMIC_DISPATCH(detail::AttentionValuesBlock)(probs, ld_probs, n_queries, values, slots,
                                                     head_dim, first_count, out, ld_out);
}

}  // namespace kvc::cpu
#endif  // HWY_ONCE
