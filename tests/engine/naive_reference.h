// A deliberately naive GPT-NeoX forward pass in double precision, written straight from the
// model definition, with an explicit per-(layer, head) cache of pre-rotary keys. It shares no
// code with the engine's forward pass: tests use it as an independent reference (e.g. for the
// re-rotation of keys after an eviction).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "model/dtype_convert.h"
#include "model/weights.h"

namespace kvc::testing {

class NaiveNeox {
 public:
  struct Entry {
    std::vector<double> key;  // pre-rotary
    std::vector<double> value;
    int64_t position;         // original position
  };

  explicit NaiveNeox(const ModelWeights& w)
      : w_(w), c_(w.config), cache_(static_cast<size_t>(c_.n_layers) * c_.n_heads),
        probs_(cache_.size()) {}

  // The entries of one (layer, head), oldest first, and the probabilities (by rank) the last
  // fed token's query gave them.
  const std::vector<Entry>& entries(int layer, int head) const {
    return cache_[static_cast<size_t>(layer) * c_.n_heads + head];
  }
  const std::vector<double>& last_probs(int layer, int head) const {
    return probs_[static_cast<size_t>(layer) * c_.n_heads + head];
  }

  // Feeds one token; returns the logits. `shift`: keys rotated by rank, query by entry count.
  std::vector<double> feed(int32_t token, bool shift) {
    const int H = c_.n_heads, hd = c_.head_dim, D = c_.hidden_size;
    std::vector<double> x = row(w_.embed_in, token);
    for (int l = 0; l < c_.n_layers; ++l) {
      const LayerWeights& lw = w_.layers[l];
      std::vector<double> h1 = norm(x, lw.ln1_w, lw.ln1_b);
      std::vector<double> qkv = linear(lw.qkv, lw.qkv_b, h1);
      std::vector<double> ctx(D, 0.0);
      for (int h = 0; h < H; ++h) {
        auto& entries = cache_[static_cast<size_t>(l) * H + h];
        const double* base = &qkv[static_cast<size_t>(h) * 3 * hd];
        Entry e{{base + hd, base + 2 * hd}, {base + 2 * hd, base + 3 * hd}, seen_};
        entries.push_back(e);
        const int64_t qpos = shift ? static_cast<int64_t>(entries.size()) - 1 : seen_;
        std::vector<double> q = rotate({base, base + hd}, qpos);
        std::vector<double> scores(entries.size());
        double mx = -1e300;
        for (size_t r = 0; r < entries.size(); ++r) {
          const int64_t kpos = shift ? static_cast<int64_t>(r) : entries[r].position;
          std::vector<double> k = rotate(entries[r].key, kpos);
          double s = 0;
          for (int i = 0; i < hd; ++i) s += q[i] * k[i];
          scores[r] = s / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, scores[r]);
        }
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - mx));
        for (size_t r = 0; r < entries.size(); ++r)
          for (int i = 0; i < hd; ++i) ctx[h * hd + i] += scores[r] / sum * entries[r].value[i];
        std::vector<double>& probs = probs_[static_cast<size_t>(l) * H + h];
        probs.resize(entries.size());
        for (size_t r = 0; r < entries.size(); ++r) probs[r] = scores[r] / sum;
      }
      std::vector<double> attn = linear(lw.attn_out, lw.attn_out_b, ctx);
      std::vector<double> mlp_in;
      if (c_.use_parallel_residual) {
        mlp_in = norm(x, lw.ln2_w, lw.ln2_b);
      } else {
        for (int i = 0; i < D; ++i) x[i] += attn[i];
        mlp_in = norm(x, lw.ln2_w, lw.ln2_b);
      }
      std::vector<double> a = linear(lw.fc_in, lw.fc_in_b, mlp_in);
      for (double& v : a) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      std::vector<double> m = linear(lw.fc_out, lw.fc_out_b, a);
      for (int i = 0; i < D; ++i) x[i] += m[i] + (c_.use_parallel_residual ? attn[i] : 0.0);
    }
    ++seen_;
    return linear(w_.embed_out, nullptr, norm(x, w_.final_ln_w, w_.final_ln_b));
  }

  // Keeps only `ranks` in every (layer, head).
  void keep(const std::vector<int>& ranks) {
    for (auto& entries : cache_) {
      std::vector<Entry> kept;
      for (int r : ranks) kept.push_back(entries[r]);
      entries = std::move(kept);
    }
  }

 private:
  static double at(const Matrix& m, int64_t r, int64_t c) {
    const size_t i = static_cast<size_t>(r * m.cols + c);
    switch (m.dtype) {
      case DType::F32: return static_cast<const float*>(m.data)[i];
      case DType::BF16: return cvt::bf16_to_f32(static_cast<const uint16_t*>(m.data)[i]);
      case DType::F16: return cvt::f16_to_f32(static_cast<const uint16_t*>(m.data)[i]);
    }
    return 0;
  }
  std::vector<double> row(const Matrix& m, int64_t r) const {
    std::vector<double> out(m.cols);
    for (int64_t c = 0; c < m.cols; ++c) out[c] = at(m, r, c);
    return out;
  }
  std::vector<double> linear(const Matrix& m, const float* b, const std::vector<double>& x) const {
    std::vector<double> y(m.rows);
    for (int64_t r = 0; r < m.rows; ++r) {
      double s = b ? b[r] : 0.0;
      for (int64_t c = 0; c < m.cols; ++c) s += at(m, r, c) * x[c];
      y[r] = s;
    }
    return y;
  }
  std::vector<double> norm(const std::vector<double>& x, const float* w, const float* b) const {
    double mean = 0, var = 0;
    for (double v : x) mean += v;
    mean /= x.size();
    for (double v : x) var += (v - mean) * (v - mean);
    var /= x.size();
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      y[i] = (x[i] - mean) / std::sqrt(var + c_.layer_norm_eps) * w[i] + b[i];
    return y;
  }
  std::vector<double> rotate(std::vector<double> v, int64_t pos) const {
    const int rot = c_.rotary_ndims, half = rot / 2;
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(static_cast<double>(c_.rotary_base), -2.0 * i / rot);
      const double a = pos * inv_freq, c = std::cos(a), s = std::sin(a);
      const double x1 = v[i], x2 = v[i + half];
      v[i] = x1 * c - x2 * s;
      v[i + half] = x2 * c + x1 * s;
    }
    return v;
  }

  const ModelWeights& w_;
  const ModelConfig& c_;
  std::vector<std::vector<Entry>> cache_;
  std::vector<std::vector<double>> probs_;
  int64_t seen_ = 0;
};

}  // namespace kvc::testing
