// Hand-made cache views and plan buffers for the policy tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "kvc/policy.h"
#include "policy/policy.h"

namespace kvc::test {

// One (layer, head) cache: entries oldest first.
struct HeadData {
  std::vector<int64_t> positions;
  std::vector<int32_t> tokens;
  std::vector<float> acc;   // accumulated attention
  std::vector<float> last;  // last-step attention
  std::vector<float> norms; // key norms
  // ABI minor 1 signals (kvc_cache_view's arrays)
  std::vector<float> window, pivotal, cosine;
  int64_t size() const { return static_cast<int64_t>(positions.size()); }
  // Keeps the listed ranks (as an engine applying a KEEP list).
  void keep(const std::vector<int32_t>& ranks) {
    HeadData out;
    for (int32_t r : ranks) {
      out.positions.push_back(positions[r]);
      if (!tokens.empty()) out.tokens.push_back(tokens[r]);
      if (!acc.empty()) out.acc.push_back(acc[r]);
      if (!last.empty()) out.last.push_back(last[r]);
      if (!norms.empty()) out.norms.push_back(norms[r]);
      if (!window.empty()) out.window.push_back(window[r]);
      if (!pivotal.empty()) out.pivotal.push_back(pivotal[r]);
      if (!cosine.empty()) out.cosine.push_back(cosine[r]);
    }
    *this = std::move(out);
  }
};

// A whole cache (n_layers x n_heads heads) and the view onto it.
struct Cache {
  int32_t n_layers = 1, n_heads = 1;
  int64_t seen = 0;
  std::vector<HeadData> heads;
  std::vector<kvc_head_view> views;
  std::vector<const float*> window_ptrs, pivotal_ptrs, cosine_ptrs;
  kvc_cache_view view{};

  Cache(int32_t layers, int32_t heads_per_layer) : n_layers(layers), n_heads(heads_per_layer) {
    heads.resize(static_cast<size_t>(layers) * heads_per_layer);
  }
  HeadData& head(int32_t l, int32_t h) { return heads[static_cast<size_t>(l) * n_heads + h]; }

  // n entries at positions 0..n-1 in every head, tokens `tok(p)`, scores `score(g, p)`.
  template <class Tok, class Score>
  void fill(int64_t n, Tok tok, Score score) {
    for (size_t g = 0; g < heads.size(); ++g) {
      HeadData& h = heads[g];
      h = HeadData{};
      for (int64_t p = 0; p < n; ++p) {
        h.positions.push_back(p);
        h.tokens.push_back(tok(p));
        h.acc.push_back(score(static_cast<int64_t>(g), p));
      }
    }
    seen = n;
  }

  const kvc_cache_view& make_view(int64_t n_new = 1) {
    views.clear();
    window_ptrs.clear();
    pivotal_ptrs.clear();
    cosine_ptrs.clear();
    bool any_window = false, any_pivotal = false, any_cosine = false;
    for (auto& h : heads) {
      window_ptrs.push_back(h.window.empty() ? nullptr : h.window.data());
      pivotal_ptrs.push_back(h.pivotal.empty() ? nullptr : h.pivotal.data());
      cosine_ptrs.push_back(h.cosine.empty() ? nullptr : h.cosine.data());
      any_window |= !h.window.empty();
      any_pivotal |= !h.pivotal.empty();
      any_cosine |= !h.cosine.empty();
      kvc_head_view v{};
      v.n_entries = h.size();
      v.positions = h.positions.data();
      v.token_ids = h.tokens.empty() ? nullptr : h.tokens.data();
      v.acc_attention = h.acc.empty() ? nullptr : h.acc.data();
      v.last_attention = h.last.empty() ? nullptr : h.last.data();
      v.key_norms = h.norms.empty() ? nullptr : h.norms.data();
      views.push_back(v);
    }
    view = kvc_cache_view{};
    view.struct_size = sizeof view;
    view.n_layers = n_layers;
    view.n_heads = n_heads;
    view.n_tokens_seen = seen;
    view.n_new = n_new;
    view.heads = views.data();
    view.window_attention = any_window ? window_ptrs.data() : nullptr;
    view.pivotal_count = any_pivotal ? pivotal_ptrs.data() : nullptr;
    view.key_mean_cosine = any_cosine ? cosine_ptrs.data() : nullptr;
    return view;
  }

  int64_t max_entries() const {
    int64_t m = 0;
    for (auto& h : heads) m = std::max(m, h.size());
    return m;
  }
};

// Engine-side plan buffers.
struct PlanBuffer {
  std::vector<int32_t> ranks;
  std::vector<int64_t> counts;
  kvc_plan plan{};
  PlanBuffer(const Cache& c) { reset(c); }
  void reset(const Cache& c) {
    const int64_t stride = std::max<int64_t>(c.max_entries(), 1);
    ranks.assign(static_cast<size_t>(stride * c.heads.size()), -1);
    counts.assign(c.heads.size(), 0);
    plan = kvc_plan{};
    plan.struct_size = sizeof plan;
    plan.kind = KVC_PLAN_NOTHING;
    plan.ranks = ranks.data();
    plan.stride = stride;
    plan.counts = counts.data();
  }
  std::vector<int32_t> list(size_t g) const {
    const size_t i = plan.shared ? 0 : g;
    return std::vector<int32_t>(ranks.begin() + i * plan.stride,
                                ranks.begin() + i * plan.stride + counts[i]);
  }
  // Applies the plan to the cache as the engine would.
  void apply(Cache& c) const {
    if (plan.kind == KVC_PLAN_NOTHING) return;
    for (size_t g = 0; g < c.heads.size(); ++g) {
      std::vector<int32_t> l = list(g);
      if (plan.kind == KVC_PLAN_EVICT) {
        std::vector<int32_t> keep;
        size_t j = 0;
        for (int32_t r = 0; r < c.heads[g].size(); ++r) {
          if (j < l.size() && l[j] == r) { ++j; continue; }
          keep.push_back(r);
        }
        l = keep;
      }
      c.heads[g].keep(l);
    }
  }
};

// One step of a policy as the session runs it: count the step, then decide.
inline void step_decide(PolicyInstance& p, const kvc_cache_view& view, kvc_plan& plan) {
  p.count_step();
  p.decide(view, plan);
}

inline std::vector<int32_t> iota_ranks(int32_t from, int32_t to) {
  std::vector<int32_t> v;
  for (int32_t i = from; i < to; ++i) v.push_back(i);
  return v;
}

inline std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A host with the given model shape and no tokenizer (or a toy one: "x" -> id 'x').
struct TestHost {
  kvc_policy_host host{};
  explicit TestHost(int32_t layers = 2, int32_t heads = 2, bool toy_tokenizer = false) {
    host.struct_size = sizeof host;
    host.n_layers = layers;
    host.n_heads = heads;
    host.vocab_size = 50304;
    host.max_position_embeddings = 2048;
    if (toy_tokenizer) host.tokenize = &toy_tokenize;
  }
  // Every byte is one token (its value); a leading space joins the next byte as 1000 + byte.
  static int64_t toy_tokenize(void*, const char* text, int32_t* ids, size_t cap) {
    std::vector<int32_t> out;
    for (const char* c = text; *c; ++c) {
      if (*c == ' ' && c[1] != '\0') {
        out.push_back(1000 + static_cast<unsigned char>(c[1]));
        ++c;
      } else {
        out.push_back(static_cast<unsigned char>(*c));
      }
    }
    for (size_t i = 0; i < out.size() && i < cap; ++i) ids[i] = out[i];
    return static_cast<int64_t>(out.size());
  }
};

inline std::string plugin_path(const std::string& name) {
  return std::string(KVC_BUILD_POLICY_DIR) + "/libkvc_policy_" + name + ".so";
}

inline std::string bad_plugin_path(const std::string& name) {
  return std::string(KVC_BAD_PLUGIN_DIR) + "/libkvc_policy_" + name + ".so";
}

// Runs `f`, expecting a kvc::Error with `status` whose message contains every `needles`.
template <class F>
std::string expect_error(F&& f, kvc_status status, std::initializer_list<std::string> needles) {
  try {
    f();
  } catch (const kvc::Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message lacks '" << n << "': " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no kvc::Error thrown";
  return "";
}

}  // namespace kvc::test
