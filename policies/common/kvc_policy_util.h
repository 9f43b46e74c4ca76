// Small header-only helpers shared by the bundled policies. Only kvc/policy.h crosses the
// plugin boundary; everything here is private to each .so.
#pragma once

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "kvc/policy.h"

#define KVC_POLICY_DEFAULT_SEPARATORS \
  "15,13,32,2,28,27,964,1157,3736,2195,3706,1163,209,186,187,2490,586,4928,50276,50275"

// Range limits of the schemas: sizes are entry counts, ids are token ids.
#define KVC_POLICY_MAX_SIZE 1e9
#define KVC_POLICY_MAX_ID 2147483647.0

namespace kvc_policy {

// Reports a printf-style message through the host and returns the failure code 1.
inline int fail(const kvc_policy_host* host, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
inline int fail(const kvc_policy_host* host, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (host != nullptr && host->set_error != nullptr) host->set_error(host->host_data, buf);
  return 1;
}

// Runs `body` (returning 0 or an error code) and turns a C++ exception into an error, so that
// no exception ever crosses the C boundary.
template <class F>
int guarded(const kvc_policy_host* host, F&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    return fail(host, "internal error: %s", e.what());
  } catch (...) {
    return fail(host, "internal error");
  }
}

// Separator token ids: the INT_LIST `ids` plus every string of `strings` mapped through the
// model's tokenizer, alone and with a leading space, where that gives exactly one token
// (as the SepLLM streaming code does). Sorted, without duplicates.
inline int collect_separators(const kvc_policy_host* host, const kvc_policy_value& ids,
                              const kvc_policy_value& strings, std::vector<int32_t>* out) {
  out->clear();
  for (size_t i = 0; i < ids.n_ints; ++i) out->push_back(static_cast<int32_t>(ids.ints[i]));
  for (size_t i = 0; i < strings.n_strings; ++i) {
    const std::string s = strings.strings[i];
    for (const std::string& variant : {s, " " + s}) {
      int32_t tok[4];
      const int64_t n = host->tokenize(host->host_data, variant.c_str(), tok, 4);
      if (n < 0) {
        if (host->n_layers == 0) return 0;  // only checking parameters, no model yet
        return fail(host,
                    "separator_strings needs the model's tokenizer, and this model has none "
                    "(give token ids in 'separators' instead)");
      }
      if (n == 1) out->push_back(tok[0]);
    }
  }
  std::sort(out->begin(), out->end());
  out->erase(std::unique(out->begin(), out->end()), out->end());
  return 0;
}

// Layers whose signals a shared scope sums: at least one, no duplicates, each within the
// model (checked when there is one).
inline int collect_layers(const kvc_policy_host* host, const kvc_policy_value& v,
                          std::vector<int32_t>* out) {
  out->clear();
  if (v.n_ints == 0) return fail(host, "score_layers must list at least one layer");
  for (size_t i = 0; i < v.n_ints; ++i) {
    if (host->n_layers > 0 && v.ints[i] >= host->n_layers)
      return fail(host, "score_layers: layer %lld does not exist (the model has %d layers, 0..%d)",
                  static_cast<long long>(v.ints[i]), host->n_layers, host->n_layers - 1);
    if (std::find(out->begin(), out->end(), v.ints[i]) != out->end())
      return fail(host, "score_layers: layer %lld is listed twice",
                  static_cast<long long>(v.ints[i]));
    out->push_back(static_cast<int32_t>(v.ints[i]));
  }
  return 0;
}

// Constant-time membership for token ids (a bitmap over 0..max id).
class TokenSet {
 public:
  void assign(const std::vector<int32_t>& ids) {
    bits_.clear();
    for (int32_t id : ids) {
      if (id < 0) continue;
      if (static_cast<size_t>(id) >= bits_.size()) bits_.resize(static_cast<size_t>(id) + 1, 0);
      bits_[static_cast<size_t>(id)] = 1;
    }
  }
  bool empty() const { return bits_.empty(); }
  bool contains(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < bits_.size() && bits_[static_cast<size_t>(id)];
  }

 private:
  std::vector<uint8_t> bits_;
};

// The lazy H2O rule (docs/policies.md, lazy_h2o), optionally with a separator region (unified
// with update_interval > 0). One group is one (layer, head), or every (layer, head) at once in
// the shared scope. Per group, from the oldest entry: sinks [0, sink) | middle | the last
// `recent`. In the middle, the most recent `separator` separator entries are always kept; the
// rest are heavy-hitter candidates.
//  - A step counter counts every decide call (every step, also before the cache is full).
//  - When counter % interval == 0, or the step fed several tokens (a prefill: its one policy
//    application must not fill the heavy set by FIFO), and the group holds more than
//    `capacity()` entries: full H2O selection of the top `heavy` candidates by accumulated
//    attention (ties: older first); they become the group's protected set.
//  - Otherwise, while over capacity: evict the oldest unprotected candidate, else the oldest
//    protected one (FIFO; one entry per step when decoding one token at a time).
// Protected entries are remembered by original position, which is unique and increasing with
// rank, so they survive the rank changes that evictions cause.
class LazyRule {
 public:
  int64_t sink = 0, recent = 0, separator = 0, heavy = 0, interval = 1;
  bool shared = false;
  std::vector<int32_t> score_layers;  // shared scope; empty = all layers
  TokenSet separators;

  int64_t capacity() const { return sink + recent + separator + heavy; }

  void reset() {
    counter_ = 0;
    protected_.clear();
  }

  int decide(const kvc_policy_host* host, const kvc_cache_view& v, kvc_plan& plan) {
    ++counter_;
    const int64_t n_groups = shared ? 1 : static_cast<int64_t>(v.n_layers) * v.n_heads;
    bool over = false;
    for (int64_t g = 0; g < n_groups; ++g) over |= v.heads[g].n_entries > capacity();
    if (!over) return 0;  // KVC_PLAN_NOTHING
    if (protected_.size() != static_cast<size_t>(n_groups)) protected_.assign(n_groups, {});
    const bool refresh = counter_ % interval == 0 || v.n_new > 1;
    plan.kind = refresh ? KVC_PLAN_KEEP : KVC_PLAN_EVICT;
    plan.shared = shared ? 1 : 0;
    for (int64_t g = 0; g < n_groups; ++g) {
      const kvc_head_view& h = v.heads[g];
      int32_t* out = plan.ranks + g * plan.stride;
      const int64_t L = h.n_entries;
      if (L <= capacity()) {
        plan.counts[g] = refresh ? L : 0;
        for (int64_t r = 0; refresh && r < L; ++r) out[r] = static_cast<int32_t>(r);
        continue;
      }
      if (h.positions == nullptr || (heavy > 0 && refresh && !shared && !h.acc_attention))
        return fail(host, "the cache view lacks positions or accumulated attention");
      const Group grp = group(h);
      plan.counts[g] = refresh ? select(v, g, h, grp, out) : evict(g, h, grp, L - capacity(), out);
      if (plan.counts[g] < 0) return fail(host, "the cache view lacks accumulated attention");
    }
    return 0;
  }

 private:
  struct Group {
    int64_t a, mid_end, sep_floor;  // kept separators: rank >= sep_floor with a separator id
  };

  Group group(const kvc_head_view& h) const {
    Group g;
    g.a = std::min(sink, h.n_entries);
    g.mid_end = h.n_entries - std::min(recent, h.n_entries - g.a);
    g.sep_floor = g.mid_end;  // none kept
    if (separator > 0 && !separators.empty() && h.token_ids != nullptr) {
      int64_t found = 0;
      for (int64_t r = g.mid_end - 1; r >= g.a && found < separator; --r) {
        if (separators.contains(h.token_ids[r])) {
          ++found;
          g.sep_floor = r;
        }
      }
    }
    return g;
  }

  bool kept_separator(const kvc_head_view& h, const Group& g, int64_t r) const {
    return r >= g.sep_floor && h.token_ids != nullptr && separators.contains(h.token_ids[r]);
  }

  // Refresh: full selection; the chosen heavy hitters become the protected set.
  int64_t select(const kvc_cache_view& v, int64_t gi, const kvc_head_view& h, const Group& g,
                 int32_t* out) {
    cand_.clear();
    for (int64_t r = g.a; r < g.mid_end; ++r)
      if (!kept_separator(h, g, r)) cand_.push_back(r);
    if (static_cast<int64_t>(cand_.size()) > heavy) {
      score_.assign(static_cast<size_t>(h.n_entries), 0.0);
      if (shared) {
        // Sum over the score layers and every head, in double (order-independent at fp32).
        const bool all = score_layers.empty();
        const size_t n_l = all ? static_cast<size_t>(v.n_layers) : score_layers.size();
        for (size_t i = 0; i < n_l; ++i) {
          const int32_t l = all ? static_cast<int32_t>(i) : score_layers[i];
          for (int32_t hh = 0; hh < v.n_heads; ++hh) {
            const float* s = v.heads[l * v.n_heads + hh].acc_attention;
            if (s == nullptr) return -1;
            for (int64_t r : cand_) score_[r] += s[r];
          }
        }
      } else {
        for (int64_t r : cand_) score_[r] = h.acc_attention[r];
      }
      auto better = [&](int64_t x, int64_t y) {
        return score_[x] > score_[y] || (score_[x] == score_[y] && x < y);
      };
      std::nth_element(cand_.begin(), cand_.begin() + heavy, cand_.end(), better);
      cand_.resize(static_cast<size_t>(heavy));
      std::sort(cand_.begin(), cand_.end());
    }
    std::vector<int64_t>& prot = protected_[gi];
    prot.clear();
    for (int64_t r : cand_) prot.push_back(h.positions[r]);
    // Merge: sinks, kept separators and heavy hitters (all in the middle), then the window.
    int64_t n = 0;
    size_t c = 0;
    for (int64_t r = 0; r < g.a; ++r) out[n++] = static_cast<int32_t>(r);
    for (int64_t r = g.a; r < g.mid_end; ++r) {
      const bool heavy_hit = c < cand_.size() && cand_[c] == r;
      if (heavy_hit) ++c;
      if (heavy_hit || kept_separator(h, g, r)) out[n++] = static_cast<int32_t>(r);
    }
    for (int64_t r = g.mid_end; r < h.n_entries; ++r) out[n++] = static_cast<int32_t>(r);
    return n;
  }

  // FIFO: `k` victims, oldest unprotected candidates first, then the oldest protected ones.
  int64_t evict(int64_t gi, const kvc_head_view& h, const Group& g, int64_t k, int32_t* out) {
    std::vector<int64_t>& prot = protected_[gi];
    victims_.clear();
    size_t p = 0;  // protected positions are sorted, like positions along ranks
    for (int64_t r = g.a; r < g.mid_end && static_cast<int64_t>(victims_.size()) < k; ++r) {
      if (kept_separator(h, g, r)) continue;
      const int64_t pos = h.positions[r];
      while (p < prot.size() && prot[p] < pos) ++p;
      if (p < prot.size() && prot[p] == pos) continue;
      victims_.push_back(r);
    }
    const size_t unprotected = victims_.size();
    for (int64_t r = g.a; r < g.mid_end && static_cast<int64_t>(victims_.size()) < k; ++r) {
      if (kept_separator(h, g, r)) continue;
      auto it = std::lower_bound(prot.begin(), prot.end(), h.positions[r]);
      if (it != prot.end() && *it == h.positions[r]) {
        victims_.push_back(r);
        prot.erase(it);
      }
    }
    std::inplace_merge(victims_.begin(), victims_.begin() + unprotected, victims_.end());
    for (size_t i = 0; i < victims_.size(); ++i) out[i] = static_cast<int32_t>(victims_[i]);
    return static_cast<int64_t>(victims_.size());
  }

  int64_t counter_ = 0;
  std::vector<std::vector<int64_t>> protected_;  // per group, original positions, ascending
  std::vector<int64_t> cand_, victims_;
  std::vector<double> score_;
};

// Parameters that several bundled policies share, with the seed project's defaults. One
// definition each, so names, ranges and help read the same in every policy's schema.
namespace param {

constexpr kvc_param_info size(const char* name, const char* default_value, double min_value,
                              const char* help) {
  return {sizeof(kvc_param_info), name, KVC_PARAM_INT, default_value, min_value,
          KVC_POLICY_MAX_SIZE, nullptr, help};
}

inline constexpr kvc_param_info kStartSize =
    size("start_size", "4", 0, "Initial entries always kept (attention sinks)");
inline constexpr kvc_param_info kRecentSize =
    size("recent_size", "252", 0, "Most recent entries kept");
inline constexpr kvc_param_info kLocalSize =
    size("local_size", "256", 0, "Most recent entries kept");
inline constexpr kvc_param_info kHeavySize =
    size("heavy_size", "128", 0, "Middle entries kept by accumulated attention (heavy hitters)");
inline constexpr kvc_param_info kSeparatorSize =
    size("separator_size", "64", 0, "Most recent separator entries of the middle kept");
inline constexpr kvc_param_info kScope = {
    sizeof(kvc_param_info), "scope", KVC_PARAM_CHOICE, "per_head", 0, 0, "per_head|shared",
    "per_head: each (layer, head) ranks its own scores; shared: one set for all, scored by "
    "score_layers summed over heads (the seed project: shared, layer 0)"};
inline constexpr kvc_param_info kScoreLayers = {
    sizeof(kvc_param_info), "score_layers", KVC_PARAM_INT_LIST, "0", 0, 65535, nullptr,
    "Layers whose attention scores the shared scope sums over heads"};
inline constexpr kvc_param_info kSeparators = {
    sizeof(kvc_param_info), "separators", KVC_PARAM_INT_LIST, KVC_POLICY_DEFAULT_SEPARATORS, 0,
    KVC_POLICY_MAX_ID, nullptr, "Separator token ids (default: the SepLLM list for GPT-NeoX)"};
inline constexpr kvc_param_info kSeparatorStrings = {
    sizeof(kvc_param_info), "separator_strings", KVC_PARAM_STRING_LIST, "", 0, 0, nullptr,
    "More separators as text, mapped through the model's tokenizer (alone and with a leading "
    "space)"};

}  // namespace param

}  // namespace kvc_policy

// The SepLLM streaming separator list for the GPT-NeoX tokenizer (docs/policies.md, sepllm):
// ". , ? ! ; :" alone and with a leading space, space, tab, newline, " \n", "\n ", " \n ",
// two and three spaces.

// The entry point every bundled plugin exports (and nothing else).
#define KVC_POLICY_DEFINE_ENTRY(descriptor)                                                \
  extern "C" KVC_POLICY_EXPORT const kvc_policy_descriptor* kvc_policy_entry(             \
      uint32_t host_abi_major, uint32_t /*host_abi_minor*/) {                             \
    return host_abi_major == KVC_POLICY_ABI_MAJOR ? &(descriptor) : nullptr;              \
  }
