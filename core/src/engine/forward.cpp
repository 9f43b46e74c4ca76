#include "engine/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "cpu/attention.h"
#include "cpu/matmul.h"
#include "model/dtype_convert.h"

namespace kvc {
namespace {

// Tokens per internal block of a long prefill: bounds scratch memory (the MLP activations of a
// block are block * intermediate floats) while keeping the GEMMs wide enough to be efficient.
constexpr int64_t kMaxBlockTokens = 256;

void layer_norm(const float* x, const float* w, const float* b, float eps, int64_t dim,
                float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(dim);
  double var = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    const double d = x[i] - mean;
    var += d * d;
  }
  var /= static_cast<double>(dim);
  const float inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  const float m = static_cast<float>(mean);
  for (int64_t i = 0; i < dim; ++i) out[i] = (x[i] - m) * inv * w[i] + b[i];
}

void embedding_row(const Matrix& table, int32_t token, float* out) {
  const uint8_t* row = table.row_ptr(token);
  const int64_t n = table.cols;
  switch (table.dtype) {
    case DType::F32:
      std::memcpy(out, row, sizeof(float) * n);
      break;
    case DType::BF16: {
      const auto* r = reinterpret_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = cvt::bf16_to_f32(r[i]);
      break;
    }
    case DType::F16: {
      const auto* r = reinterpret_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = cvt::f16_to_f32(r[i]);
      break;
    }
  }
}

}  // namespace

RotaryTable::RotaryTable(int rotary_ndims, float base) : half_(rotary_ndims / 2) {
  // As transformers: inv_freq = 1 / base^(2i / rotary_ndims) and angle = position * inv_freq,
  // both in float32; cos(angle) and sin(angle) rounded to float32.
  inv_freq_.resize(half_);
  for (int i = 0; i < half_; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_ndims);
    inv_freq_[i] = 1.0f / std::pow(base, exponent);
  }
}

void RotaryTable::ensure(int64_t n_positions) {
  if (n_positions <= n_ || half_ == 0) return;
  const int64_t grown = std::max<int64_t>(n_positions, n_ * 2);
  cos_.resize(static_cast<size_t>(grown) * half_);
  sin_.resize(static_cast<size_t>(grown) * half_);
  for (int64_t p = n_; p < grown; ++p) {
    for (int i = 0; i < half_; ++i) {
      const float angle = static_cast<float>(p) * inv_freq_[i];
      cos_[static_cast<size_t>(p) * half_ + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_[static_cast<size_t>(p) * half_ + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  n_ = grown;
}

CpuForward::CpuForward(const ModelWeights& weights, int n_threads)
    : w_(weights),
      cfg_(weights.config),
      pool_(n_threads),
      rotary_(weights.config.rotary_ndims, weights.config.rotary_base),
      scale_(1.0f / std::sqrt(static_cast<float>(weights.config.head_dim))) {
  thread_scores_.resize(static_cast<size_t>(pool_.size()));
  thread_query_.assign(static_cast<size_t>(pool_.size()),
                       std::vector<float>(static_cast<size_t>(weights.config.head_dim)));
}

void CpuForward::ensure_scratch(int64_t n) {
  if (n <= scratch_tokens_) return;
  const auto sz = [n](int64_t width) { return static_cast<size_t>(n * width); };
  x_.resize(sz(cfg_.hidden_size));
  h_.resize(sz(cfg_.hidden_size));
  qkv_.resize(sz(3 * cfg_.hidden_size));
  ctx_.resize(sz(cfg_.hidden_size));
  attn_.resize(sz(cfg_.hidden_size));
  mlp_.resize(sz(cfg_.intermediate_size));
  mlp2_.resize(sz(cfg_.hidden_size));
  scratch_tokens_ = n;
}

void CpuForward::run(const ForwardRequest& request, KvCache& cache) {
  for (int64_t t = 0; t < request.n_tokens; ++t) {
    const int32_t id = request.tokens[t];
    if (id < 0 || id >= cfg_.vocab_size)
      fail(KVC_ERR_OUT_OF_RANGE, "token id " + std::to_string(id) + " at index " +
                                     std::to_string(t) + " is outside the vocabulary [0, " +
                                     std::to_string(cfg_.vocab_size) + ")");
  }
  for (int64_t off = 0; off < request.n_tokens; off += kMaxBlockTokens) {
    const int64_t n = std::min(kMaxBlockTokens, request.n_tokens - off);
    run_block(request, off, n, cache);
  }
}

void CpuForward::run_block(const ForwardRequest& req, int64_t offset, int64_t n,
                           KvCache& cache) {
  ensure_scratch(n);
  const int64_t hidden = cfg_.hidden_size;
  const int64_t inter = cfg_.intermediate_size;
  const float eps = cfg_.layer_norm_eps;
  const int32_t* tokens = req.tokens + offset;

  for (int64_t t = 0; t < n; ++t) embedding_row(w_.embed_in, tokens[t], &x_[t * hidden]);

  for (int layer = 0; layer < cfg_.n_layers; ++layer) {
    const LayerWeights& lw = w_.layers[layer];
    for (int64_t t = 0; t < n; ++t)
      layer_norm(&x_[t * hidden], lw.ln1_w, lw.ln1_b, eps, hidden, &h_[t * hidden]);
    cpu::matmul(h_.data(), n, lw.qkv, lw.qkv_b, qkv_.data(), pool_);

    attention(layer, n, offset, req.first_position + offset, tokens, req.positions, req.signals,
              req.per_query, cache);
    cpu::matmul(ctx_.data(), n, lw.attn_out, lw.attn_out_b, attn_.data(), pool_);

    if (cfg_.use_parallel_residual) {
      // x = x + attn(LN1(x)) + mlp(LN2(x))
      for (int64_t t = 0; t < n; ++t)
        layer_norm(&x_[t * hidden], lw.ln2_w, lw.ln2_b, eps, hidden, &h_[t * hidden]);
    } else {
      // x = x + attn(LN1(x)); x = x + mlp(LN2(x))
      for (size_t i = 0; i < static_cast<size_t>(n * hidden); ++i) x_[i] += attn_[i];
      for (int64_t t = 0; t < n; ++t)
        layer_norm(&x_[t * hidden], lw.ln2_w, lw.ln2_b, eps, hidden, &h_[t * hidden]);
    }
    cpu::matmul(h_.data(), n, lw.fc_in, lw.fc_in_b, mlp_.data(), pool_);
    // Exact-erf GELU (hidden_act "gelu"), vectorized; a block's worth is spread over the pool.
    pool_.parallel_for(n * inter, [&](int64_t begin, int64_t end, int) {
      cpu::gelu(&mlp_[static_cast<size_t>(begin)], end - begin);
    });
    cpu::matmul(mlp_.data(), n, lw.fc_out, lw.fc_out_b, mlp2_.data(), pool_);
    if (cfg_.use_parallel_residual) {
      // Same association as transformers: (mlp + attn) + x.
      for (size_t i = 0; i < static_cast<size_t>(n * hidden); ++i)
        x_[i] = (mlp2_[i] + attn_[i]) + x_[i];
    } else {
      for (size_t i = 0; i < static_cast<size_t>(n * hidden); ++i) x_[i] = mlp2_[i] + x_[i];
    }
  }

  if (req.which == KVC_LOGITS_NONE || req.logits == nullptr) return;
  const bool is_last_block = offset + n == req.n_tokens;
  if (req.which == KVC_LOGITS_LAST && !is_last_block) return;
  const int64_t first_row = req.which == KVC_LOGITS_LAST ? n - 1 : 0;
  const int64_t rows = n - first_row;
  for (int64_t t = first_row; t < n; ++t)
    layer_norm(&x_[t * hidden], w_.final_ln_w, w_.final_ln_b, eps, hidden,
               &h_[(t - first_row) * hidden]);
  float* out = req.which == KVC_LOGITS_LAST
                   ? req.logits
                   : req.logits + static_cast<size_t>(offset) * cfg_.vocab_size;
  cpu::matmul(h_.data(), rows, w_.embed_out, nullptr, out, pool_);
}

void CpuForward::attend(HeadCache& hc, const float* qsrc, int64_t qpos, int64_t visible,
                        kvc_position_mode mode, uint32_t signals, int tid, float* ctx_row) {
  const int hd = cfg_.head_dim;
  const int half = cfg_.rotary_ndims / 2;
  const int rot = cfg_.rotary_ndims;
  std::vector<float>& scores = thread_scores_[static_cast<size_t>(tid)];
  std::vector<float>& q = thread_query_[static_cast<size_t>(tid)];
  // Rotate the query (rotate_half on the first `rot` channels).
  const float* qc = rotary_.cos_row(qpos);
  const float* qs = rotary_.sin_row(qpos);
  for (int i = 0; i < half; ++i) {
    q[i] = qsrc[i] * qc[i] - qsrc[i + half] * qs[i];
    q[i + half] = qsrc[i + half] * qc[i] + qsrc[i] * qs[i];
  }
  for (int i = rot; i < hd; ++i) q[i] = qsrc[i];

  if (scores.size() < static_cast<size_t>(visible)) scores.resize(visible);
  // Under shift, entry r is rotated with position r (its rank); else its own position.
  cpu::attention_scores(q.data(), hc.key_rows(), hc.value_rows(), hc.slots().data(),
                        mode == KVC_POSITIONS_SHIFT ? nullptr : hc.positions().data(),
                        rotary_.cos_table(), rotary_.sin_table(), half, hd, scale_, visible,
                        scores.data());
  const float inv = 1.0f / cpu::softmax_exp(scores.data(), visible);
  for (int64_t r = 0; r < visible; ++r) scores[r] *= inv;
  cpu::attention_values(scores.data(), hc.value_rows(), hc.slots().data(), hd, visible, ctx_row);
  if (signals & KVC_SIGNAL_ACC_ATTENTION) {
    std::vector<float>& acc = hc.acc_attention();
    for (int64_t r = 0; r < visible; ++r) acc[r] += scores[r];
  }
  if (signals & KVC_SIGNAL_LAST_ATTENTION)
    std::copy(scores.begin(), scores.begin() + visible, hc.last_attention().begin());
}

// Appends the block's keys and values to each head's cache and attends. Heads are independent,
// so both run per head on the pool (the appends touch a few cold cache lines per head; in
// parallel they cost half). Without a hook, every key first, then token t sees the cache and
// the block's tokens up to itself; with one, each query right after its own key, and the hook
// after each query (it may evict, so the next query sees the cache as a token-by-token run
// would, and its rank under shift is the cache size before it).
void CpuForward::attention(int layer, int64_t n, int64_t offset, int64_t first_position,
                           const int32_t* tokens, kvc_position_mode mode, uint32_t signals,
                           QueryHook* hook, KvCache& cache) {
  const int H = cfg_.n_heads, hd = cfg_.head_dim;
  const int64_t hidden = cfg_.hidden_size;
  const bool want_norms = (signals & KVC_SIGNAL_KEY_NORM) != 0;
  const auto qkv_row = [&](int64_t t, int64_t h) {
    return &qkv_[static_cast<size_t>(t * 3 * hidden + h * 3 * hd)];
  };
  const auto ctx_row = [&](int64_t t, int64_t h) {
    return &ctx_[static_cast<size_t>(t * hidden + h * hd)];
  };

  // Largest position any key or query of this block is rotated with: a rank below the cache
  // size once the block is appended (shift), or an original position below the tokens seen so
  // far (original). Both bounds are known without scanning the entries.
  int64_t max_pos = first_position + n;
  for (int h = 0; h < H; ++h) max_pos = std::max(max_pos, cache.head(layer, h).size() + n);
  rotary_.ensure(max_pos);

  if (hook != nullptr) {
    for (int64_t t = 0; t < n; ++t) {
      pool_.parallel_for(H, [&](int64_t h_begin, int64_t h_end, int tid) {
        for (int64_t h = h_begin; h < h_end; ++h) {
          HeadCache& hc = cache.head(layer, static_cast<int>(h));
          const float* row = qkv_row(t, h);
          hc.append(row + hd, row + 2 * hd, first_position + t, tokens[t], want_norms);
          const int64_t size = hc.size();
          const int64_t qpos = mode == KVC_POSITIONS_SHIFT ? size - 1 : first_position + t;
          attend(hc, row, qpos, size, mode, signals, tid, ctx_row(t, h));
        }
      });
      hook->after_query(layer, offset + t, cache);
    }
    return;
  }
  pool_.parallel_for(H, [&](int64_t h_begin, int64_t h_end, int tid) {
    for (int64_t h = h_begin; h < h_end; ++h) {
      HeadCache& hc = cache.head(layer, static_cast<int>(h));
      for (int64_t t = 0; t < n; ++t) {
        const float* row = qkv_row(t, h);
        hc.append(row + hd, row + 2 * hd, first_position + t, tokens[t], want_norms);
      }
      const int64_t before = hc.size() - n;  // entries cached before this block
      for (int64_t t = 0; t < n; ++t) {
        const int64_t qpos = mode == KVC_POSITIONS_SHIFT ? before + t : first_position + t;
        attend(hc, qkv_row(t, h), qpos, before + t + 1, mode, signals, tid, ctx_row(t, h));
      }
    }
  });
}

}  // namespace kvc
