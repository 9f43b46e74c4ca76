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
  thread_block_.resize(static_cast<size_t>(pool_.size()));
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

// q <- qsrc rotated with position `pos` (rotate_half on the first rotary_ndims channels).
void CpuForward::rotate_query(const float* qsrc, int64_t pos, float* q) const {
  const int hd = cfg_.head_dim, half = cfg_.rotary_ndims / 2, rot = cfg_.rotary_ndims;
  const float* qc = rotary_.cos_row(pos);
  const float* qs = rotary_.sin_row(pos);
  for (int i = 0; i < half; ++i) {
    q[i] = qsrc[i] * qc[i] - qsrc[i + half] * qs[i];
    q[i + half] = qsrc[i + half] * qc[i] + qsrc[i] * qs[i];
  }
  for (int i = rot; i < hd; ++i) q[i] = qsrc[i];
}

// Adds one query's probabilities over the first `visible` entries to the signals.
void CpuForward::add_signals(HeadCache& hc, const float* probs, int64_t visible,
                             uint32_t signals) {
  if (signals & KVC_SIGNAL_ACC_ATTENTION) {
    std::vector<float>& acc = hc.acc_attention();
    for (int64_t r = 0; r < visible; ++r) acc[r] += probs[r];
  }
  if (signals & KVC_SIGNAL_LAST_ATTENTION)
    std::copy(probs, probs + visible, hc.last_attention().begin());
  if (signals & (KVC_SIGNAL_WINDOW_ATTENTION | KVC_SIGNAL_PIVOTAL_COUNT))
    hc.record_query(probs, visible);
}

// From the raw scores of one query over the first `visible` entries: softmax, the context
// row, and the probabilities added to the signals.
void CpuForward::finish_query(HeadCache& hc, float* scores, int64_t visible, uint32_t signals,
                              float* ctx_row) {
  const float inv = 1.0f / cpu::softmax_exp(scores, visible);
  for (int64_t r = 0; r < visible; ++r) scores[r] *= inv;
  cpu::attention_values(scores, hc.value_rows(), hc.slots().data(), cfg_.head_dim, visible,
                        ctx_row);
  add_signals(hc, scores, visible, signals);
}

void CpuForward::attend(HeadCache& hc, const float* qsrc, int64_t qpos, int64_t visible,
                        kvc_position_mode mode, uint32_t signals, int tid, float* ctx_row) {
  std::vector<float>& scores = thread_scores_[static_cast<size_t>(tid)];
  std::vector<float>& q = thread_query_[static_cast<size_t>(tid)];
  rotate_query(qsrc, qpos, q.data());
  if (scores.size() < static_cast<size_t>(visible)) scores.resize(visible);
  // Under shift, entry r is rotated with position r (its rank); else its own position.
  cpu::attention_scores(q.data(), hc.key_rows(), hc.value_rows(), hc.slots().data(),
                        mode == KVC_POSITIONS_SHIFT ? nullptr : hc.positions().data(),
                        rotary_.cos_table(), rotary_.sin_table(), cfg_.rotary_ndims / 2,
                        cfg_.head_dim, scale_, visible, scores.data());
  finish_query(hc, scores.data(), visible, signals, ctx_row);
}

// A block's queries of one head when nothing leaves between them (a prefill): the keys are
// rotated once and transposed, and the scores of every query come from one batched kernel
// (attention_scores_block) instead of one dot product per key and query.
void CpuForward::attend_block(HeadCache& hc, const float* qkv, int64_t row_stride,
                              int64_t n, int64_t first_position, kvc_position_mode mode,
                              uint32_t signals, int tid, float* ctx, int64_t ctx_stride) {
  const int hd = cfg_.head_dim, half = cfg_.rotary_ndims / 2, rot = cfg_.rotary_ndims;
  const int64_t total = hc.size(), before = total - n;
  const int64_t pad = cpu::attention_key_padding();
  const int64_t ldk = (total + pad - 1) / pad * pad;
  BlockScratch& b = thread_block_[static_cast<size_t>(tid)];
  b.keys_t.assign(static_cast<size_t>(hd * ldk), 0.0f);
  b.queries.resize(static_cast<size_t>(n * hd));
  b.scores.resize(static_cast<size_t>(n * ldk));
  const auto& slots = hc.slots();
  const auto& positions = hc.positions();
  for (int64_t r = 0; r < total; ++r) {
    const float* k = hc.key_rows() + static_cast<int64_t>(slots[r]) * hd;
    const int64_t pos = mode == KVC_POSITIONS_SHIFT ? r : positions[r];
    const float* c = rotary_.cos_row(pos);
    const float* s = rotary_.sin_row(pos);
    float* col = b.keys_t.data() + r;
    for (int i = 0; i < half; ++i) {
      col[i * ldk] = k[i] * c[i] - k[i + half] * s[i];
      col[(i + half) * ldk] = k[i + half] * c[i] + k[i] * s[i];
    }
    for (int i = rot; i < hd; ++i) col[i * ldk] = k[i];
  }
  for (int64_t t = 0; t < n; ++t) {
    const int64_t qpos = mode == KVC_POSITIONS_SHIFT ? before + t : first_position + t;
    rotate_query(qkv + t * row_stride, qpos, b.queries.data() + t * hd);
  }
  cpu::attention_scores_block(b.queries.data(), n, hd, b.keys_t.data(), ldk, before + 1, scale_,
                              b.scores.data(), ldk);
  // Softmax per query over its own keys, the later keys' probabilities zero; then the
  // context rows of the whole block at once.
  for (int64_t t = 0; t < n; ++t) {
    float* p = b.scores.data() + t * ldk;
    const int64_t visible = before + t + 1;
    const float inv = 1.0f / cpu::softmax_exp(p, visible);
    for (int64_t r = 0; r < visible; ++r) p[r] *= inv;
    std::fill(p + visible, p + std::min(total, visible + 4), 0.0f);
    add_signals(hc, p, visible, signals);
  }
  cpu::attention_values_block(b.scores.data(), ldk, n, hc.value_rows(), slots.data(), hd,
                              before + 1, ctx, ctx_stride);
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
      if (n == 1) {  // a decode step: the single-query kernel
        const int64_t size = hc.size();
        const int64_t qpos = mode == KVC_POSITIONS_SHIFT ? size - 1 : first_position;
        attend(hc, qkv_row(0, h), qpos, size, mode, signals, tid, ctx_row(0, h));
        continue;
      }
      attend_block(hc, qkv_row(0, h), 3 * hidden, n, first_position, mode, signals, tid,
                   ctx_row(0, h), hidden);
    }
  });
}

}  // namespace kvc
