#include "engine/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kvc {

int32_t HeadCache::append(const float* key, const float* value, int64_t position,
                          int32_t token_id, bool want_key_norm) {
  int32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = n_slots_++;
    if (store_kv_) {
      keys_.resize(keys_.size() + head_dim_);
      values_.resize(values_.size() + head_dim_);
    }
  }
  if (store_kv_) {
    std::memcpy(&keys_[static_cast<size_t>(slot) * head_dim_], key, sizeof(float) * head_dim_);
    std::memcpy(&values_[static_cast<size_t>(slot) * head_dim_], value,
                sizeof(float) * head_dim_);
  }
  slot_.push_back(slot);
  position_.push_back(position);
  token_.push_back(token_id);
  acc_.push_back(0.0f);
  last_.push_back(0.0f);
  float norm = 0.0f;
  if (want_key_norm && store_kv_) {
    double s = 0.0;
    for (int i = 0; i < head_dim_; ++i) s += static_cast<double>(key[i]) * key[i];
    norm = static_cast<float>(std::sqrt(s));
  }
  norm_.push_back(norm);
  if (cosine_ && store_kv_) {
    if (inv_norm_.size() < static_cast<size_t>(n_slots_)) inv_norm_.resize(n_slots_);
    double s = 0.0;
    for (int i = 0; i < head_dim_; ++i) s += static_cast<double>(key[i]) * key[i];
    inv_norm_[slot] = s > 0.0 ? 1.0 / std::sqrt(s) : 0.0;
  }
  if (window_ > 0 && store_kv_) {
    // The slot's ring starts empty: no earlier query attended this entry.
    const size_t need = static_cast<size_t>(n_slots_) * window_;
    const size_t at = static_cast<size_t>(slot) * window_;
    if (ring_window_) {
      if (window_ring_.size() < need) window_ring_.resize(need);
      std::fill_n(window_ring_.begin() + at, window_, 0.0f);
    }
    if (ring_pivotal_) {
      if (pivotal_ring_.size() < need) pivotal_ring_.resize(need);
      std::fill_n(pivotal_ring_.begin() + at, window_, uint8_t{0});
      if (pivotal_count_.size() < static_cast<size_t>(n_slots_)) pivotal_count_.resize(n_slots_);
      pivotal_count_[slot] = 0;
    }
  }
  return slot;
}

void HeadCache::set_signal_window(int32_t window, uint32_t signals) {
  ring_window_ = window > 0 && (signals & KVC_SIGNAL_WINDOW_ATTENTION) != 0;
  ring_pivotal_ = window > 0 && (signals & KVC_SIGNAL_PIVOTAL_COUNT) != 0;
  window_ = ring_window_ || ring_pivotal_ ? window : 0;
  cosine_ = (signals & KVC_SIGNAL_KEY_MEAN_COSINE) != 0;
}

void HeadCache::record_query(const float* probs, int64_t visible) {
  if (window_ == 0 || !store_kv_) return;
  const size_t row = static_cast<size_t>(queries_ % window_);
  ++queries_;
  // Entries past `visible` (appended later in a prefill) keep the 0 their append wrote.
  for (int64_t r = 0; r < visible; ++r) {
    const size_t at = static_cast<size_t>(slot_[r]) * window_ + row;
    if (ring_window_) window_ring_[at] = probs[r];
    if (ring_pivotal_) {
      // At least uniform over the keys this query attended; compared in double so that the
      // threshold itself is exact.
      const uint8_t pivotal = static_cast<double>(probs[r]) * static_cast<double>(visible) >= 1.0;
      pivotal_count_[slot_[r]] += pivotal - pivotal_ring_[at];
      pivotal_ring_[at] = pivotal;
    }
  }
}

std::vector<float>& HeadCache::derived(uint32_t signal) {
  std::vector<float>& out = signal == KVC_SIGNAL_WINDOW_ATTENTION ? window_attention_
                            : signal == KVC_SIGNAL_PIVOTAL_COUNT  ? pivotal_
                                                                  : key_cosine_;
  out.resize(slot_.size());
  return out;
}

void HeadCache::derive(uint32_t signals) {
  const size_t n = slot_.size();
  if ((signals & KVC_SIGNAL_WINDOW_ATTENTION) && ring_window_) {
    std::vector<float>& out = derived(KVC_SIGNAL_WINDOW_ATTENTION);
    for (size_t r = 0; r < n; ++r) {
      const float* ring = &window_ring_[static_cast<size_t>(slot_[r]) * window_];
      double sum = 0.0;  // in double: the mean does not depend on the ring's order
      for (int32_t j = 0; j < window_; ++j) sum += ring[j];
      out[r] = static_cast<float>(sum / window_);
    }
  }
  if ((signals & KVC_SIGNAL_PIVOTAL_COUNT) && ring_pivotal_) {
    std::vector<float>& out = derived(KVC_SIGNAL_PIVOTAL_COUNT);
    for (size_t r = 0; r < n; ++r) out[r] = static_cast<float>(pivotal_count_[slot_[r]]);
  }
  if ((signals & KVC_SIGNAL_KEY_MEAN_COSINE) && cosine_ && store_kv_ && n > 0) {
    // The cosine of each key to the mean of the unit keys of this cache, in double, from the
    // inverse norms kept per slot; a zero key (or a zero mean) has cosine 0. The mean's 1 / n
    // cancels in the cosine and is left out.
    std::vector<float>& out = derived(KVC_SIGNAL_KEY_MEAN_COSINE);
    mean_.assign(static_cast<size_t>(head_dim_), 0.0);
    for (size_t r = 0; r < n; ++r) {
      const float* k = key(slot_[r]);
      const double inv = inv_norm_[slot_[r]];
      for (int i = 0; i < head_dim_; ++i) mean_[i] += k[i] * inv;
    }
    double mean_norm = 0.0;
    for (int i = 0; i < head_dim_; ++i) mean_norm += mean_[i] * mean_[i];
    const double inv_mean = mean_norm > 0.0 ? 1.0 / std::sqrt(mean_norm) : 0.0;
    for (size_t r = 0; r < n; ++r) {
      const float* k = key(slot_[r]);
      double dot[4] = {0.0, 0.0, 0.0, 0.0};  // independent sums, so the loop pipelines
      int i = 0;
      for (; i + 4 <= head_dim_; i += 4)
        for (int j = 0; j < 4; ++j) dot[j] += k[i + j] * mean_[i + j];
      for (; i < head_dim_; ++i) dot[0] += k[i] * mean_[i];
      const double d = (dot[0] + dot[1]) + (dot[2] + dot[3]);
      out[r] = static_cast<float>(d * inv_norm_[slot_[r]] * inv_mean);
    }
  }
}

// Keeps the entries for which keep(rank) is true, in order; frees the others' slots. Runs on
// every eviction, so it works in place without allocating.
template <class KeepFn>
void HeadCache::compact(KeepFn&& keep) {
  size_t out = 0;
  for (size_t r = 0; r < slot_.size(); ++r) {
    if (!keep(r)) {
      free_slots_.push_back(slot_[r]);
      continue;
    }
    slot_[out] = slot_[r];
    position_[out] = position_[r];
    token_[out] = token_[r];
    acc_[out] = acc_[r];
    last_[out] = last_[r];
    norm_[out] = norm_[r];
    ++out;
  }
  slot_.resize(out);
  position_.resize(out);
  token_.resize(out);
  acc_.resize(out);
  last_.resize(out);
  norm_.resize(out);
}

// Both lists are strictly increasing (validated by the caller), so one cursor walks them.
void HeadCache::keep(const int32_t* ranks, int64_t n) {
  int64_t next = 0;
  compact([&](size_t r) {
    if (next < n && ranks[next] == static_cast<int32_t>(r)) {
      ++next;
      return true;
    }
    return false;
  });
}

void HeadCache::evict(const int32_t* ranks, int64_t n) {
  if (n == 0) return;
  int64_t next = 0;
  compact([&](size_t r) {
    if (next < n && ranks[next] == static_cast<int32_t>(r)) {
      ++next;
      return false;
    }
    return true;
  });
}

void HeadCache::clear() {
  // Keep the allocations: a reset session refills them at once.
  queries_ = 0;
  free_slots_.clear();
  for (int32_t s = n_slots_ - 1; s >= 0; --s)
    free_slots_.push_back(s);
  slot_.clear();
  position_.clear();
  token_.clear();
  acc_.clear();
  last_.clear();
  norm_.clear();
}

KvCache::KvCache(int n_layers, int n_heads, int head_dim)
    : n_layers_(n_layers), n_heads_(n_heads), heads_(static_cast<size_t>(n_layers) * n_heads) {
  for (auto& h : heads_) h.init(head_dim);
}

int64_t KvCache::min_entries() const {
  int64_t m = heads_.empty() ? 0 : heads_[0].size();
  for (const auto& h : heads_) m = std::min(m, h.size());
  return m;
}

int64_t KvCache::max_entries() const {
  int64_t m = 0;
  for (const auto& h : heads_) m = std::max(m, h.size());
  return m;
}

void KvCache::counts(std::vector<int64_t>& out) const {
  out.resize(heads_.size());
  for (size_t i = 0; i < heads_.size(); ++i) out[i] = heads_[i].size();
}

int64_t KvCache::total_entries() const {
  int64_t t = 0;
  for (const auto& h : heads_) t += h.size();
  return t;
}

void KvCache::clear() {
  for (auto& h : heads_) h.clear();
}

void KvCache::fill_head_view(size_t i, uint32_t signals) {
  const HeadCache& h = heads_[i];
  kvc_head_view& v = view_heads_[i];
  v.n_entries = h.size();
  v.positions = h.positions().data();
  v.token_ids = h.token_ids().data();
  v.acc_attention = (signals & KVC_SIGNAL_ACC_ATTENTION) ? h.acc_attention().data() : nullptr;
  v.last_attention = (signals & KVC_SIGNAL_LAST_ATTENTION) ? h.last_attention().data() : nullptr;
  v.key_norms = (signals & KVC_SIGNAL_KEY_NORM) ? h.key_norms().data() : nullptr;
  const uint32_t derived = signals & HeadCache::kDerivedSignals;
  if (derived == 0) return;
  // Computed now, at decision time, where this cache holds the data; a device backend has
  // written them already (ComputeBackend::fetch_signals).
  HeadCache& writable = heads_[i];
  if (writable.stores_kv()) writable.derive(derived);
  view_window_.resize(heads_.size());
  view_pivotal_.resize(heads_.size());
  view_cosine_.resize(heads_.size());
  if (derived & KVC_SIGNAL_WINDOW_ATTENTION)
    view_window_[i] = writable.derived(KVC_SIGNAL_WINDOW_ATTENTION).data();
  if (derived & KVC_SIGNAL_PIVOTAL_COUNT)
    view_pivotal_[i] = writable.derived(KVC_SIGNAL_PIVOTAL_COUNT).data();
  if (derived & KVC_SIGNAL_KEY_MEAN_COSINE)
    view_cosine_[i] = writable.derived(KVC_SIGNAL_KEY_MEAN_COSINE).data();
}

void KvCache::fill_view(int64_t n_tokens_seen, int64_t n_new, uint32_t signals) {
  view_ = kvc_cache_view{};
  view_.struct_size = sizeof(kvc_cache_view);
  view_.n_layers = n_layers_;
  view_.n_heads = n_heads_;
  view_.n_tokens_seen = n_tokens_seen;
  view_.n_new = n_new;
  view_.heads = view_heads_.data();
  if (signals & KVC_SIGNAL_WINDOW_ATTENTION) view_.window_attention = view_window_.data();
  if (signals & KVC_SIGNAL_PIVOTAL_COUNT) view_.pivotal_count = view_pivotal_.data();
  if (signals & KVC_SIGNAL_KEY_MEAN_COSINE) view_.key_mean_cosine = view_cosine_.data();
  view_.first_layer = 0;
}

const kvc_cache_view& KvCache::make_view(int64_t n_tokens_seen, int64_t n_new,
                                         uint32_t signals) {
  view_heads_.resize(heads_.size());
  for (size_t i = 0; i < heads_.size(); ++i) fill_head_view(i, signals);
  fill_view(n_tokens_seen, n_new, signals);
  return view_;
}

const kvc_cache_view& KvCache::make_layer_view(int layer, int64_t n_tokens_seen, int64_t n_new,
                                               uint32_t signals) {
  view_heads_.resize(heads_.size());
  const size_t first = static_cast<size_t>(layer) * n_heads_;
  for (size_t i = first; i < first + static_cast<size_t>(n_heads_); ++i)
    fill_head_view(i, signals);
  fill_view(n_tokens_seen, n_new, signals);
  return view_;
}

void KvCache::apply(const kvc_plan& plan) {
  for (int l = 0; l < n_layers_; ++l) apply_layer(l, plan);
}

void KvCache::apply_layer(int layer, const kvc_plan& plan) {
  if (plan.kind == KVC_PLAN_NOTHING) return;
  const size_t first = static_cast<size_t>(layer) * n_heads_;
  for (size_t i = first; i < first + static_cast<size_t>(n_heads_); ++i) {
    const size_t list = plan.shared ? 0 : i;
    const int32_t* ranks = plan.ranks + list * plan.stride;
    const int64_t count = plan.counts[list];
    if (plan.kind == KVC_PLAN_KEEP)
      heads_[i].keep(ranks, count);
    else
      heads_[i].evict(ranks, count);
  }
}

}  // namespace kvc
