// The KV cache, built for eviction.
//
// Each (layer, head) owns its entries. Keys and values live in *slots* that never move; the
// entry order (rank 0 = oldest) is kept in small per-entry arrays (slot, original position,
// token id, signals). Evicting an entry compacts those small arrays and frees its slot for the
// next token, so no key or value data is copied (attention is permutation-invariant; only the
// rotary position depends on the rank, and it is applied when scores are computed).
//
// Keys are stored before rotary. The position a key is rotated with is its rank under the
// "shift" mode and its original position under the "original" mode (docs/policies.md §2).
#pragma once

#include <cstdint>
#include <vector>

#include "kvc/kvc.h"
#include "kvc/policy.h"

namespace kvc {

class HeadCache {
 public:
  void init(int head_dim) { head_dim_ = head_dim; }
  // false: metadata only (a device backend keeps the keys and values in the same slots);
  // append then ignores `key` and `value`, which may be NULL.
  void set_store_kv(bool store) { store_kv_ = store; }
  bool stores_kv() const { return store_kv_; }
  // Slots ever allocated (the highest slot number + 1).
  int32_t n_slots() const { return n_slots_; }

  int64_t size() const { return static_cast<int64_t>(slot_.size()); }

  // Appends an entry; returns its slot. Key and value are copied in (head_dim floats each).
  int32_t append(const float* key, const float* value, int64_t position, int32_t token_id,
                 bool want_key_norm);

  const float* key(int32_t slot) const { return &keys_[static_cast<size_t>(slot) * head_dim_]; }
  const float* value(int32_t slot) const {
    return &values_[static_cast<size_t>(slot) * head_dim_];
  }

  // All slots' keys (or values), head_dim floats per slot: key(slot) == key_rows() + slot * hd.
  const float* key_rows() const { return keys_.data(); }
  const float* value_rows() const { return values_.data(); }

  // Per-entry arrays in rank order.
  const std::vector<int32_t>& slots() const { return slot_; }
  const std::vector<int64_t>& positions() const { return position_; }
  const std::vector<int32_t>& token_ids() const { return token_; }
  std::vector<float>& acc_attention() { return acc_; }
  std::vector<float>& last_attention() { return last_; }
  const std::vector<float>& acc_attention() const { return acc_; }
  const std::vector<float>& last_attention() const { return last_; }
  const std::vector<float>& key_norms() const { return norm_; }
  std::vector<float>& key_norms() { return norm_; }

  // The windowed signals (KVC_SIGNAL_WINDOW_ATTENTION, KVC_SIGNAL_PIVOTAL_COUNT): each slot
  // remembers what the last `window` queries gave it, in a ring indexed by query number, so
  // an entry's value depends only on the queries that attended it. Kept on the host only
  // when this cache stores the keys (a device backend keeps its own rings). 0: none. Also
  // notes whether KVC_SIGNAL_KEY_MEAN_COSINE is wanted (its per-slot key norms).
  void set_signal_window(int32_t window, uint32_t signals);
  int32_t signal_window() const { return window_; }
  // Records one query's probabilities over the first `visible` entries (by rank).
  void record_query(const float* probs, int64_t visible);
  // The signals computed when a decision is made, by rank (KVC_SIGNAL_WINDOW_ATTENTION,
  // KVC_SIGNAL_PIVOTAL_COUNT, KVC_SIGNAL_KEY_MEAN_COSINE): derive() computes the requested
  // ones from the rings and keys held here; a device backend writes them through derived().
  static constexpr uint32_t kDerivedSignals = KVC_SIGNAL_WINDOW_ATTENTION |
                                              KVC_SIGNAL_PIVOTAL_COUNT |
                                              KVC_SIGNAL_KEY_MEAN_COSINE;
  void derive(uint32_t signals);
  // The array of one derived signal, sized to the entries.
  std::vector<float>& derived(uint32_t signal);

  // Keeps only the entries at `ranks` (strictly increasing, validated by the caller).
  void keep(const int32_t* ranks, int64_t n);
  // Removes the entries at `ranks` (strictly increasing, validated by the caller).
  void evict(const int32_t* ranks, int64_t n);
  void clear();

 private:
  template <class KeepFn>
  void compact(KeepFn&& keep);

  int head_dim_ = 0;
  bool store_kv_ = true;
  int32_t n_slots_ = 0;
  std::vector<float> keys_;    // [n_slots][head_dim], pre-rotary
  std::vector<float> values_;  // [n_slots][head_dim]
  std::vector<int32_t> free_slots_;
  // Rank-ordered entry data.
  std::vector<int32_t> slot_;
  std::vector<int64_t> position_;
  std::vector<int32_t> token_;
  std::vector<float> acc_;
  std::vector<float> last_;
  std::vector<float> norm_;
  // Windowed signals, per slot: ring entry [slot * window_ + query % window_].
  int32_t window_ = 0;
  bool ring_window_ = false, ring_pivotal_ = false;
  int64_t queries_ = 0;
  std::vector<float> window_ring_;     // probabilities
  std::vector<uint8_t> pivotal_ring_;  // 1: at least uniform
  std::vector<int32_t> pivotal_count_; // per slot, the ring's sum
  // Derived signals by rank, valid after derive() (or a device backend's fetch).
  std::vector<float> window_attention_, pivotal_, key_cosine_;
  bool cosine_ = false;              // KEY_MEAN_COSINE: inverse key norms kept per slot
  std::vector<double> inv_norm_;     // per slot: 1 / |key| (0 for a zero key)
  std::vector<double> mean_;         // scratch of derive()
};

class KvCache {
 public:
  KvCache(int n_layers, int n_heads, int head_dim);

  int n_layers() const { return n_layers_; }
  int n_heads() const { return n_heads_; }
  HeadCache& head(int layer, int h) { return heads_[static_cast<size_t>(layer) * n_heads_ + h]; }
  const HeadCache& head(int layer, int h) const {
    return heads_[static_cast<size_t>(layer) * n_heads_ + h];
  }
  size_t n_head_caches() const { return heads_.size(); }
  HeadCache& head_at(size_t i) { return heads_[i]; }
  const HeadCache& head_at(size_t i) const { return heads_[i]; }

  int64_t min_entries() const;
  int64_t max_entries() const;
  int64_t total_entries() const;
  // Entries of every (layer, head), row-major [n_layers][n_heads], into `out` (resized).
  void counts(std::vector<int64_t>& out) const;
  void clear();
  void set_store_kv(bool store) {
    for (auto& h : heads_) h.set_store_kv(store);
  }
  // The window of the windowed signals among `signals` (HeadCache::set_signal_window).
  void set_signal_window(int32_t window, uint32_t signals) {
    for (auto& h : heads_) h.set_signal_window(window, signals);
  }
  int32_t signal_window() const { return heads_.empty() ? 0 : heads_[0].signal_window(); }

  // A read-only view for a policy (pointers into the cache; valid until the cache changes).
  // Signal arrays are exposed only when `signals` (KVC_SIGNAL_* bits) asks for them.
  const kvc_cache_view& make_view(int64_t n_tokens_seen, int64_t n_new, uint32_t signals);

  // The view with the heads of `layer` brought up to date and the other layers' entries left
  // as the last view made them (for decisions that read one layer only).
  const kvc_cache_view& make_layer_view(int layer, int64_t n_tokens_seen, int64_t n_new,
                                        uint32_t signals);

  // Applies a validated plan (lists indexed layer * n_heads + head, or list 0 when shared).
  void apply(const kvc_plan& plan);
  // The same, to the heads of one layer only.
  void apply_layer(int layer, const kvc_plan& plan);

 private:
  int n_layers_, n_heads_;
  std::vector<HeadCache> heads_;
  void fill_head_view(size_t i, uint32_t signals);
  void fill_view(int64_t n_tokens_seen, int64_t n_new, uint32_t signals);

  std::vector<kvc_head_view> view_heads_;
  // The views' arrays of the newer signals, one pointer per (layer, head).
  std::vector<const float*> view_window_, view_pivotal_, view_cosine_;
  kvc_cache_view view_{};
};

}  // namespace kvc
