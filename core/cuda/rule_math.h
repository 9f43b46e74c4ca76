// The engine's rule (kvc/policy.h kvc_rule, executed on the host by RuleEngine) written once
// as __host__ __device__ code, so that the CUDA kernels (rule_kernels.cu) and the host tests
// (tests/cuda/device_rule_test.cpp) run the same lines. No CUDA headers: under nvcc the
// functions are __host__ __device__, elsewhere plain inline C++17.
//
// The contract is RuleEngine's, plan for plan: the same groups (per head, per layer, shared),
// layout (sinks, recent window, the most recent separators of the middle), scores (the heavy
// signal per rank, averaged over a layer's heads or summed over the shared scope's layers and
// heads in double in RuleEngine's order, then pooled), the one order of kvc/selection.hpp
// (better score first, NaN last, then the larger tie signal, the older position, the lower
// head), lazy refresh (FIFO between refreshes, protected heavy picks) and Ada-KV's adaptive
// allocation. The top-k is a bitonic sort of candidate indices under that total order: the
// kept set of a total order does not depend on the algorithm, so it equals partition_best's.
//
// Work is expressed through a Team: `for_each(n, f)` runs f(i) for i in [0, n) (in any order,
// possibly in parallel, every f(i) independent of the others) and returns when all are done;
// on the device it is a block-strided loop followed by __syncthreads(), on the host a loop.
// Every thread of a block takes the same control path (all branch conditions are computed
// from memory every thread reads identically), as __syncthreads() requires.
#pragma once

#include <cmath>
#include <cstdint>

#include "kvc/policy.h"

#if defined(__CUDACC__)
#define KVC_HD __host__ __device__
#else
#define KVC_HD
#endif

namespace kvc::rule_math {

// ---- The rule, as plain data a kernel can take by value -----------------------------------

struct Rule {
  int64_t sink = 0, recent = 0, separator = 0, heavy = 0;
  int32_t scope = KVC_SCOPE_PER_HEAD;
  int32_t smallest = 0;  // heavy_order == KVC_ORDER_SMALLEST
  int32_t pooling = KVC_POOLING_NONE;
  int64_t pool_kernel = 1;
  int32_t has_tie = 0;   // tie_signal != 0
  int32_t adaptive = 0;  // allocation == KVC_ALLOCATION_ADAPTIVE
  double allocation_floor = 0.0;
  int64_t update_interval = 0;
  int64_t trigger_size = 0;
  const int64_t* layer_heavy = nullptr;  // [n_layer_heavy] or NULL
  int32_t n_layer_heavy = 0;
  const int32_t* separators = nullptr;  // sorted, unique (RuleEngine's separators_)
  int32_t n_separators = 0;
  const int32_t* score_layers = nullptr;  // shared scope: the layers summed (never empty)
  int32_t n_score_layers = 0;
  int32_t n_layers = 0, n_heads = 0;
};

KVC_HD inline int64_t heavy_of_layer(const Rule& r, int32_t layer) {
  if (r.layer_heavy != nullptr && layer >= 0 && layer < r.n_layer_heavy)
    return r.layer_heavy[layer];
  return r.heavy;
}
KVC_HD inline int64_t keep_of_layer(const Rule& r, int32_t layer) {
  return r.sink + r.recent + r.separator + heavy_of_layer(r, layer);
}
KVC_HD inline int64_t group_limit(const Rule& r, int32_t layer) {
  return r.layer_heavy != nullptr ? keep_of_layer(r, layer) : r.trigger_size;
}
// Ada-KV's per-head floor: floor(allocation_floor * budget + 1e-9), as RuleEngine.
KVC_HD inline int64_t adaptive_floor(const Rule& r, int64_t budget) {
  const double f = r.allocation_floor * static_cast<double>(budget) + 1e-9;
  const int64_t t = static_cast<int64_t>(f);  // f >= 0: truncation is floor
  return t;
}

KVC_HD inline bool is_separator(const Rule& r, int32_t token) {
  int32_t lo = 0, hi = r.n_separators;  // lower_bound over the sorted ids
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (r.separators[mid] < token)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < r.n_separators && r.separators[lo] == token;
}

// ---- One step's kind ------------------------------------------------------------------------

struct Step {
  int32_t lazy = 0, refresh = 1;
  int32_t kind = KVC_PLAN_KEEP;  // KEEP after a full selection, EVICT between refreshes
};
KVC_HD inline Step step_kind(const Rule& r, int64_t step, int64_t n_new) {
  Step s;
  s.lazy = r.update_interval > 0;
  s.refresh = !s.lazy || step % r.update_interval == 0 || n_new > 1;
  s.kind = s.refresh ? KVC_PLAN_KEEP : KVC_PLAN_EVICT;
  return s;
}

// ---- The order (kvc/selection.hpp rules 1-3 with RuleEngine::Candidate's operator<) -------

KVC_HD inline bool score_before(double a, double b, bool smallest) {
  const bool nan_a = a != a, nan_b = b != b;
  if (nan_a || nan_b) return !nan_a && nan_b;
  return smallest ? a < b : a > b;
}

struct Candidate {
  double score, tie;
  int64_t position;
  int32_t head, rank;
};
// Rule 3's tie-break: the larger tie signal (a NaN after every number), then the older
// position, then the lower head.
KVC_HD inline bool candidate_less(const Candidate& x, const Candidate& y) {
  const bool nan_x = x.tie != x.tie, nan_y = y.tie != y.tie;
  if (nan_x != nan_y) return nan_y;
  if (!nan_x && x.tie != y.tie) return x.tie > y.tie;
  if (x.position != y.position) return x.position < y.position;
  return x.head < y.head;
}
KVC_HD inline bool candidate_before(const Candidate& x, const Candidate& y, bool smallest) {
  if (score_before(x.score, y.score, smallest)) return true;
  if (score_before(y.score, x.score, smallest)) return false;
  return candidate_less(x, y);
}

KVC_HD inline int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Sorts idx[0, P) (P a power of two) best first under `before(a, b)` over non-negative
// indices; -1 marks an absent entry and sorts after every index.
template <class Team, class Before>
KVC_HD void bitonic_sort(Team& team, int32_t* idx, int64_t P, const Before& before) {
  for (int64_t k = 2; k <= P; k <<= 1)
    for (int64_t j = k >> 1; j > 0; j >>= 1)
      team.for_each(P, [&](int64_t i) {
        const int64_t l = i ^ j;
        if (l <= i) return;
        const int32_t a = idx[i], b = idx[l];
        const auto better = [&](int32_t x, int32_t y) {  // x strictly before y
          if (x < 0) return false;
          if (y < 0) return true;
          return before(x, y);
        };
        const bool ascending = (i & k) == 0;  // best-first half
        if (ascending ? better(b, a) : better(a, b)) {
          idx[i] = b;
          idx[l] = a;
        }
      });
}

// ---- Group layout ---------------------------------------------------------------------------

struct Layout {
  int64_t n = 0, sinks = 0, middle_end = 0, separator_floor = 0;
  int64_t kept_separators = 0;  // separators kept in [separator_floor, middle_end)
};

// Acc is the data of the cache (see HostCacheAccess in the test and DeviceAccess in
// rule_kernels.cu):
//   int64_t n(gi); bool has_tokens(); int32_t token(gi, r); int64_t position(gi, r);
//   float heavy(gi, r); float tie(gi, r);
//   bool is_protected(gi, r); void set_protected(gi, r, bool);
//   int64_t size_state(gi); void set_size_state(gi, v);
template <class Acc>
KVC_HD Layout layout(const Rule& rule, const Acc& a, int64_t gi) {
  Layout g;
  g.n = a.n(gi);
  g.sinks = rule.sink < g.n ? rule.sink : g.n;
  const int64_t rest = g.n - g.sinks;
  g.middle_end = g.n - (rule.recent < rest ? rule.recent : rest);
  g.separator_floor = g.middle_end;
  if (rule.separator > 0 && rule.n_separators > 0 && a.has_tokens()) {
    for (int64_t r = g.middle_end - 1; r >= g.sinks && g.kept_separators < rule.separator;
         --r) {
      if (is_separator(rule, a.token(gi, r))) {
        ++g.kept_separators;
        g.separator_floor = r;
      }
    }
  }
  return g;
}

template <class Acc>
KVC_HD bool kept_separator(const Rule& rule, const Acc& a, int64_t gi, const Layout& g,
                           int64_t r) {
  return r >= g.separator_floor && r < g.middle_end && a.has_tokens() &&
         is_separator(rule, a.token(gi, r));
}

// ---- Scores -----------------------------------------------------------------------------------

// The group's raw signal at rank r (which: 0 heavy, 1 tie), aggregated as RuleEngine does:
// per head as is, per layer summed over the layer's heads then divided by their count, shared
// summed over score_layers x heads, in double and in that order.
template <class Acc>
KVC_HD double aggregate(const Rule& rule, const Acc& a, int32_t layer, int32_t head, int which,
                        int64_t r) {
  const int32_t H = rule.n_heads;
  const auto sig = [&](int64_t gi) {
    return static_cast<double>(which == 0 ? a.heavy(gi, r) : a.tie(gi, r));
  };
  if (rule.scope == KVC_SCOPE_PER_HEAD) return sig(static_cast<int64_t>(layer) * H + head);
  double out = 0.0;
  if (rule.scope == KVC_SCOPE_PER_LAYER) {
    for (int32_t h = 0; h < H; ++h) out += sig(static_cast<int64_t>(layer) * H + h);
    return out / H;
  }
  for (int32_t i = 0; i < rule.n_score_layers; ++i)
    for (int32_t h = 0; h < H; ++h) out += sig(static_cast<int64_t>(rule.score_layers[i]) * H + h);
  return out;
}

// Pooling along rank order over the middle [lo_end, hi_end): AVG sums the neighbours that lie
// in the middle and divides by the kernel width; MAX takes the largest (std::max's NaN
// behaviour: a NaN first stays, a NaN later is skipped).
KVC_HD inline double pooled(const Rule& rule, const double* raw, int64_t sinks,
                            int64_t middle_end, int64_t r) {
  const int64_t half = rule.pool_kernel / 2;
  const int64_t lo = r - half > sinks ? r - half : sinks;
  const int64_t hi = r + half < middle_end - 1 ? r + half : middle_end - 1;
  if (rule.pooling == KVC_POOLING_AVG) {
    double sum = 0.0;
    for (int64_t q = lo; q <= hi; ++q) sum += raw[q];
    return sum / static_cast<double>(rule.pool_kernel);
  }
  double best = raw[lo];
  for (int64_t q = lo + 1; q <= hi; ++q) best = best < raw[q] ? raw[q] : best;
  return best;
}

// ---- Scratch and output ---------------------------------------------------------------------

// Per (layer, head) rows of `stride` entries (stride >= the largest group), and index rows of
// `idx_stride` (a power of two >= stride). The pool (adaptive) holds pool_stride indices per
// layer (a power of two >= n_heads * stride). On the device these live in global memory.
struct Scratch {
  double* raw = nullptr;    // [groups][stride]
  double* score = nullptr;  // [groups][stride]
  double* tie = nullptr;    // [groups][stride]
  uint8_t* keep = nullptr;  // [groups][stride]: 0 leaves, 1 kept, 2 kept heavy pick
  int32_t* idx = nullptr;   // [groups][idx_stride]
  int32_t* pool = nullptr;  // [n_layers][pool_stride]
  Layout* layouts = nullptr;  // [groups]
  int64_t stride = 0, idx_stride = 0, pool_stride = 0;
};

// A plan as RuleEngine writes it: per (layer, head) a list of `stride` int32 ranks and a count.
struct PlanOut {
  int32_t* ranks = nullptr;
  int64_t* counts = nullptr;
  int64_t stride = 0;
};

// ---- Pieces of a decision -------------------------------------------------------------------

// A group left as it is (RuleEngine::unchanged): identity KEEP list, or an empty EVICT list.
template <class Team>
KVC_HD void unchanged(Team& team, const Step& s, int64_t n, int64_t gi, const PlanOut& out) {
  if (s.kind == KVC_PLAN_KEEP) {
    int32_t* list = out.ranks + gi * out.stride;
    team.for_each(n, [&](int64_t r) { list[r] = static_cast<int32_t>(r); });
  }
  team.for_each(1, [&](int64_t) { out.counts[gi] = s.kind == KVC_PLAN_KEEP ? n : 0; });
}

// Fills sc.keep for group `gi` (scored as (layer, head)) with `heavy` heavy entries: 1 for
// sinks, window and kept separators, 2 for heavy picks, 0 for the rest. Layout from `g`.
template <class Team, class Acc>
KVC_HD void mark_group(Team& team, const Rule& rule, const Acc& a, int32_t layer, int32_t head,
                       int64_t gi, const Layout& g, int64_t heavy, const Scratch& sc) {
  uint8_t* keep = sc.keep + gi * sc.stride;
  team.for_each(g.n, [&](int64_t r) {
    keep[r] = (r < g.sinks || r >= g.middle_end || kept_separator(rule, a, gi, g, r)) ? 1 : 0;
  });
  const int64_t candidates = g.middle_end - g.sinks - g.kept_separators;
  if (heavy <= 0 || candidates <= 0) return;
  if (candidates <= heavy) {
    team.for_each(g.middle_end - g.sinks, [&](int64_t i) {
      const int64_t r = g.sinks + i;
      if (keep[r] == 0) keep[r] = 2;
    });
    return;
  }
  double* raw = sc.raw + gi * sc.stride;
  double* score = sc.score + gi * sc.stride;
  double* tie = sc.tie + gi * sc.stride;
  const bool pool = rule.pooling != KVC_POOLING_NONE && rule.pool_kernel > 1;
  team.for_each(g.middle_end - g.sinks, [&](int64_t i) {
    const int64_t r = g.sinks + i;
    (pool ? raw : score)[r] = aggregate(rule, a, layer, head, 0, r);
    if (rule.has_tie) tie[r] = aggregate(rule, a, layer, head, 1, r);
  });
  if (pool)
    team.for_each(g.middle_end - g.sinks, [&](int64_t i) {
      const int64_t r = g.sinks + i;
      score[r] = pooled(rule, raw, g.sinks, g.middle_end, r);
    });
  int32_t* idx = sc.idx + gi * sc.idx_stride;
  const int64_t P = pow2_at_least(g.middle_end - g.sinks);
  team.for_each(P, [&](int64_t i) {
    const int64_t r = g.sinks + i;
    idx[i] = r < g.middle_end && keep[r] == 0 ? static_cast<int32_t>(r) : -1;
  });
  const bool smallest = rule.smallest != 0;
  const auto before = [&](int32_t x, int32_t y) {
    const Candidate cx{score[x], rule.has_tie ? tie[x] : 0.0, a.position(gi, x), head, x};
    const Candidate cy{score[y], rule.has_tie ? tie[y] : 0.0, a.position(gi, y), head, y};
    return candidate_before(cx, cy, smallest);
  };
  bitonic_sort(team, idx, P, before);
  team.for_each(heavy, [&](int64_t i) { keep[idx[i]] = 2; });
}

// Writes group gi's KEEP list from its keep marks and returns nothing; with `remember` (lazy)
// the heavy picks become the protected set (every other entry of the group unprotected).
// Runs in one thread (a sequential compaction).
template <class Acc>
KVC_HD void write_keep_list(const Acc& a, int64_t gi, const Layout& g, const Scratch& sc,
                            bool remember, const PlanOut& out) {
  const uint8_t* keep = sc.keep + gi * sc.stride;
  int32_t* list = out.ranks + gi * out.stride;
  int64_t n = 0;
  for (int64_t r = 0; r < g.n; ++r) {
    if (remember) a.set_protected(gi, r, keep[r] == 2);
    if (keep[r]) list[n++] = static_cast<int32_t>(r);
  }
  out.counts[gi] = n;
}

// Lazy, between refreshes (RuleEngine::evict_fifo): the ranks of the k entries that leave
// group gi (its oldest unprotected heavy candidates, then its oldest protected ones, which lose
// their protection), ascending, as an EVICT list. One thread.
template <class Acc>
KVC_HD void evict_fifo(const Rule& rule, Acc& a, int64_t gi, const Layout& g, int64_t k,
                       const PlanOut& out) {
  int32_t* list = out.ranks + gi * out.stride;
  int64_t unprotected = 0;
  for (int64_t r = g.sinks; r < g.middle_end && unprotected < k; ++r) {
    if (kept_separator(rule, a, gi, g, r) || a.is_protected(gi, r)) continue;
    list[unprotected++] = static_cast<int32_t>(r);
  }
  // Protected victims: merged into the ascending list (both parts ascend).
  int64_t total = unprotected;
  for (int64_t r = g.sinks; r < g.middle_end && total < k; ++r) {
    if (kept_separator(rule, a, gi, g, r) || !a.is_protected(gi, r)) continue;
    a.set_protected(gi, r, false);
    int64_t at = total++;
    while (at > 0 && list[at - 1] > r) {
      list[at] = list[at - 1];
      --at;
    }
    list[at] = static_cast<int32_t>(r);
  }
  out.counts[gi] = total;
}

// One group over its size (RuleEngine::reduce): a full selection (KEEP) or lazy FIFO down to
// `target` (EVICT). Group gi is scored as (layer, head). Returns whether anything leaves.
template <class Team, class Acc>
KVC_HD bool reduce(Team& team, const Rule& rule, Acc& a, const Step& s, int32_t layer,
                   int32_t head, int64_t gi, int64_t target, const Scratch& sc,
                   const PlanOut& out) {
  Layout* lay = sc.layouts + gi;
  team.for_each(1, [&](int64_t) { *lay = layout(rule, a, gi); });
  const Layout g = *lay;
  if (!s.refresh) {
    team.for_each(1, [&](int64_t) { evict_fifo(rule, a, gi, g, g.n - target, out); });
    return out.counts[gi] > 0;
  }
  mark_group(team, rule, a, layer, head, gi, g, heavy_of_layer(rule, layer), sc);
  team.for_each(1, [&](int64_t) { write_keep_list(a, gi, g, sc, s.lazy != 0, out); });
  return out.counts[gi] < g.n;
}

// Ada-KV over the heads of `layer` (RuleEngine::select_layer_adaptive): each head keeps its
// own best `floor` candidates, the rest of the layer's heavy budget goes to the best of the
// pooled remainder (ties: the older position, then the lower head).
template <class Team, class Acc>
KVC_HD void select_layer_adaptive(Team& team, const Rule& rule, Acc& a, int32_t layer,
                                  bool remember, const Scratch& sc, const PlanOut& out) {
  const int32_t H = rule.n_heads;
  const int64_t first = static_cast<int64_t>(layer) * H;
  const int64_t budget = heavy_of_layer(rule, layer);
  const int64_t floor = adaptive_floor(rule, budget);
  const bool smallest = rule.smallest != 0;
  const bool pool_scores = rule.pooling != KVC_POOLING_NONE && rule.pool_kernel > 1;
  team.for_each(H, [&](int64_t h) { sc.layouts[first + h] = layout(rule, a, first + h); });
  // Marks, scores and each head's own order.
  for (int32_t h = 0; h < H; ++h) {
    const int64_t gi = first + h;
    const Layout g = sc.layouts[gi];
    uint8_t* keep = sc.keep + gi * sc.stride;
    double* raw = sc.raw + gi * sc.stride;
    double* score = sc.score + gi * sc.stride;
    double* tie = sc.tie + gi * sc.stride;
    team.for_each(g.n, [&](int64_t r) {
      keep[r] = (r < g.sinks || r >= g.middle_end || kept_separator(rule, a, gi, g, r)) ? 1 : 0;
    });
    const int64_t middle = g.middle_end - g.sinks;
    team.for_each(middle, [&](int64_t i) {
      const int64_t r = g.sinks + i;
      (pool_scores ? raw : score)[r] = aggregate(rule, a, layer, h, 0, r);
      if (rule.has_tie) tie[r] = aggregate(rule, a, layer, h, 1, r);
    });
    if (pool_scores)
      team.for_each(middle, [&](int64_t i) {
        const int64_t r = g.sinks + i;
        score[r] = pooled(rule, raw, g.sinks, g.middle_end, r);
      });
    int32_t* idx = sc.idx + gi * sc.idx_stride;
    const int64_t P = pow2_at_least(middle);
    team.for_each(P, [&](int64_t i) {
      const int64_t r = g.sinks + i;
      idx[i] = r < g.middle_end && keep[r] == 0 ? static_cast<int32_t>(r) : -1;
    });
    const auto before = [&](int32_t x, int32_t y) {
      const Candidate cx{score[x], rule.has_tie ? tie[x] : 0.0, a.position(gi, x), h, x};
      const Candidate cy{score[y], rule.has_tie ? tie[y] : 0.0, a.position(gi, y), h, y};
      return candidate_before(cx, cy, smallest);
    };
    bitonic_sort(team, idx, P, before);
    const int64_t candidates = middle - g.kept_separators;
    const int64_t own = candidates < floor ? candidates : floor;
    team.for_each(own, [&](int64_t i) { keep[idx[i]] = 2; });
  }
  // The pool: every head's candidates after its own picks, as head * stride + rank.
  // The pool's slots do not grow when a head has fewer than `floor` candidates (RuleEngine).
  int64_t pooled_total = 0;
  const int64_t pooled_slots = static_cast<int64_t>(H) * (budget - floor);
  for (int32_t h = 0; h < H; ++h) {
    const Layout& g = sc.layouts[first + h];
    const int64_t candidates = g.middle_end - g.sinks - g.kept_separators;
    const int64_t own = candidates < floor ? candidates : floor;
    pooled_total += candidates - own;
  }
  int32_t* pool = sc.pool + static_cast<int64_t>(layer) * sc.pool_stride;
  const int64_t P = pow2_at_least(pooled_total);
  team.for_each(P, [&](int64_t i) { pool[i] = -1; });
  team.for_each(H, [&](int64_t h) {
    int64_t at = 0;
    for (int32_t e = 0; e < h; ++e) {
      const Layout& g = sc.layouts[first + e];
      const int64_t c = g.middle_end - g.sinks - g.kept_separators;
      at += c - (c < floor ? c : floor);
    }
    const Layout& g = sc.layouts[first + h];
    const int64_t c = g.middle_end - g.sinks - g.kept_separators;
    const int32_t* idx = sc.idx + (first + h) * sc.idx_stride;
    for (int64_t j = c < floor ? c : floor; j < c; ++j)
      pool[at++] = static_cast<int32_t>(h * sc.stride + idx[j]);
  });
  const auto cand = [&](int32_t e) {
    const int32_t h = static_cast<int32_t>(e / sc.stride);
    const int32_t r = static_cast<int32_t>(e % sc.stride);
    const int64_t gi = first + h;
    return Candidate{sc.score[gi * sc.stride + r],
                     rule.has_tie ? sc.tie[gi * sc.stride + r] : 0.0, a.position(gi, r), h, r};
  };
  bitonic_sort(team, pool, P, [&](int32_t x, int32_t y) {
    return candidate_before(cand(x), cand(y), smallest);
  });
  const int64_t take = pooled_slots < 0 ? 0 : (pooled_slots < pooled_total ? pooled_slots
                                                                            : pooled_total);
  team.for_each(take, [&](int64_t i) {
    const int32_t e = pool[i];
    sc.keep[(first + e / sc.stride) * sc.stride + e % sc.stride] = 2;
  });
  team.for_each(H, [&](int64_t h) {
    const int64_t gi = first + h;
    write_keep_list(a, gi, sc.layouts[gi], sc, remember, out);
    if (remember) a.set_size_state(gi, out.counts[gi]);
  });
}

// ---- Whole decisions ---------------------------------------------------------------------------

// Whether anything of layer `layer` is over its size (RuleEngine::over_layer), from the
// entries per (layer, head) `counts`.
template <class Counts>
KVC_HD bool over_layer(const Rule& rule, int32_t layer, const Counts& counts) {
  const int64_t first = static_cast<int64_t>(layer) * rule.n_heads;
  if (rule.adaptive) {
    int64_t total = 0;
    for (int32_t h = 0; h < rule.n_heads; ++h) total += counts(first + h);
    return total > rule.n_heads * keep_of_layer(rule, layer);
  }
  const int64_t limit = rule.scope == KVC_SCOPE_SHARED ? rule.trigger_size
                                                       : group_limit(rule, layer);
  for (int32_t h = 0; h < rule.n_heads; ++h)
    if (counts(first + h) > limit) return true;
  return false;
}

// One (layer, head) group of the per-head scope with uniform allocation: left as it is within
// its size, else reduced. Returns whether anything leaves.
template <class Team, class Acc>
KVC_HD bool decide_head(Team& team, const Rule& rule, Acc& a, const Step& s, int32_t layer,
                        int32_t head, const Scratch& sc, const PlanOut& out) {
  const int64_t gi = static_cast<int64_t>(layer) * rule.n_heads + head;
  if (a.n(gi) <= group_limit(rule, layer)) {
    unchanged(team, s, a.n(gi), gi, out);
    return false;
  }
  return reduce(team, rule, a, s, layer, head, gi, keep_of_layer(rule, layer), sc, out);
}

// The decision of one layer for the per-head and per-layer scopes (RuleEngine::reduce_layer).
// Returns whether anything leaves.
template <class Team, class Acc>
KVC_HD bool decide_layer(Team& team, const Rule& rule, Acc& a, const Step& s, int32_t layer,
                         const Scratch& sc, const PlanOut& out) {
  const int32_t H = rule.n_heads;
  const int64_t first = static_cast<int64_t>(layer) * H;
  bool evicted = false;
  if (rule.adaptive) {
    int64_t total = 0;
    for (int32_t h = 0; h < H; ++h) total += a.n(first + h);
    if (total <= H * keep_of_layer(rule, layer)) {
      for (int32_t h = 0; h < H; ++h) unchanged(team, s, a.n(first + h), first + h, out);
    } else if (s.refresh) {
      select_layer_adaptive(team, rule, a, layer, s.lazy != 0, sc, out);
      for (int32_t h = 0; h < H; ++h) evicted |= out.counts[first + h] < a.n(first + h);
    } else {
      for (int32_t h = 0; h < H; ++h) {
        const int64_t gi = first + h;
        const int64_t size = a.size_state(gi);
        const int64_t target = size >= 0 ? size : keep_of_layer(rule, layer);
        if (a.n(gi) <= target)
          unchanged(team, s, a.n(gi), gi, out);
        else
          evicted |= reduce(team, rule, a, s, layer, h, gi, target, sc, out);
      }
    }
    return evicted;
  }
  const int64_t limit = group_limit(rule, layer);
  if (rule.scope == KVC_SCOPE_PER_LAYER) {
    const int64_t n = a.n(first);
    if (n <= limit) {
      for (int32_t h = 0; h < H; ++h) unchanged(team, s, a.n(first + h), first + h, out);
      return false;
    }
    evicted = reduce(team, rule, a, s, layer, 0, first, keep_of_layer(rule, layer), sc, out);
    const int64_t count = out.counts[first];
    const int32_t* list = out.ranks + first * out.stride;
    for (int32_t h = 1; h < H; ++h) {
      int32_t* dst = out.ranks + (first + h) * out.stride;
      team.for_each(count, [&](int64_t j) { dst[j] = list[j]; });
      team.for_each(1, [&](int64_t) { out.counts[first + h] = count; });
    }
    return evicted;
  }
  for (int32_t h = 0; h < H; ++h) evicted |= decide_head(team, rule, a, s, layer, h, sc, out);
  return evicted;
}

// The shared scope (RuleEngine::reduce_shared): one group, list 0 of a shared plan. Returns
// whether anything leaves (the plan is then shared).
template <class Team, class Acc>
KVC_HD bool decide_shared(Team& team, const Rule& rule, Acc& a, const Step& s,
                          const Scratch& sc, const PlanOut& out) {
  if (a.n(0) <= rule.trigger_size) return false;
  return reduce(team, rule, a, s, 0, 0, 0, keep_of_layer(rule, 0), sc, out);
}

// A whole decision (RuleEngine::decide at step `step`, which counts this step, for a step
// that appended `n_new` entries): the plan's kind and whether it is shared.
struct Decision {
  int32_t kind = KVC_PLAN_NOTHING;
  int32_t shared = 0;
};
template <class Team, class Acc>
KVC_HD Decision decide(Team& team, const Rule& rule, Acc& a, int64_t step, int64_t n_new,
                       const Scratch& sc, const PlanOut& out) {
  Decision d;
  if (static_cast<int64_t>(rule.n_layers) * rule.n_heads <= 0) return d;
  const Step s = step_kind(rule, step, n_new);
  if (rule.scope == KVC_SCOPE_SHARED) {
    if (decide_shared(team, rule, a, s, sc, out)) {
      d.kind = s.kind;
      d.shared = 1;
    }
    return d;
  }
  bool evicted = false;
  for (int32_t l = 0; l < rule.n_layers; ++l) evicted |= decide_layer(team, rule, a, s, l, sc, out);
  if (evicted) d.kind = s.kind;
  return d;
}

// ---- Buffers: geometric growth ----------------------------------------------------------------

// The capacity a buffer grows to when `needed` exceeds `current`: at least `needed`, at least
// 1.5 x `current` (so n appends of one element cost O(log n) reallocations), at least `minimum`,
// rounded up to a multiple of `granule`. Returns `current` when it already suffices.
KVC_HD inline int64_t grown_capacity(int64_t needed, int64_t current, int64_t minimum = 256,
                                     int64_t granule = 256) {
  if (needed <= current) return current;
  int64_t cap = current + current / 2;
  if (cap < needed) cap = needed;
  if (cap < minimum) cap = minimum;
  if (granule > 1) cap = (cap + granule - 1) / granule * granule;
  return cap;
}

// ---- Split-K attention: merging partial softmaxes -----------------------------------------------

// A split's partial result over its keys: m = the largest score, l = sum exp(s - m), and
// o[d] = sum exp(s - m) * v[d] (not normalised). An empty split has m = -inf, l = 0, o = 0.
// Merged: M = max m_i, L = sum l_i exp(m_i - M), out[d] = sum o_i[d] exp(m_i - M) / L; and the
// probability of a key with score s is exp(s - M) / L.
struct SoftmaxTotals {
  float max, sum;
};
template <class Exp>
KVC_HD SoftmaxTotals merge_totals(const float* m, const float* l, int n, const Exp& ex) {
  float M = -INFINITY;
  for (int i = 0; i < n; ++i) M = m[i] > M ? m[i] : M;
  float L = 0.0f;
  for (int i = 0; i < n; ++i)
    if (l[i] > 0.0f) L += l[i] * ex(m[i] - M);
  return {M, L};
}
// out[d] for d in [0, dim) from the partial outputs o[i * o_stride + d].
template <class Exp>
KVC_HD float merge_output(const float* m, const float* o, int n, int64_t o_stride, int d,
                          const SoftmaxTotals& t, const Exp& ex) {
  float acc = 0.0f;
  for (int i = 0; i < n; ++i)
    if (m[i] > -INFINITY) acc += o[i * o_stride + d] * ex(m[i] - t.max);
  return acc / t.sum;
}
// How many splits a decode attention over `keys` keys uses: enough blocks to fill the device
// (`target_blocks` over `heads` heads), each at least `min_keys` keys, at most `max_splits`.
KVC_HD inline int split_count(int64_t keys, int heads, int target_blocks, int64_t min_keys,
                              int max_splits) {
  if (keys <= min_keys || heads <= 0) return 1;
  int64_t by_fill = (target_blocks + heads - 1) / heads;
  const int64_t by_keys = (keys + min_keys - 1) / min_keys;
  if (by_fill > by_keys) by_fill = by_keys;
  if (by_fill > max_splits) by_fill = max_splits;
  return by_fill < 1 ? 1 : static_cast<int>(by_fill);
}

}  // namespace kvc::rule_math
