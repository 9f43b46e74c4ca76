// Every bundled policy against a direct transcription of the reference rules
// (docs/reference-implementation.md §3; tools/reference/policy_reference.py, Policy.select),
// step by step on random streams, including a multi-token first step (rule 18).
// Scores are multiples of 1/4, so sums are exact and ties are frequent: the tie-break
// (older first) and the shared-scope sums are exercised hard.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "policy_test_util.h"

namespace kvc {
namespace {

using test::Cache;
using test::PlanBuffer;
using test::TestHost;

struct Case {
  std::string policy;
  std::map<std::string, std::string> params;
};

// The reference rule, written for clarity, not speed (sets and sorts, like the Python).
class Reference {
 public:
  Reference(const Case& c) : name_(c.policy) {
    auto get = [&](const char* k, int64_t d) {
      auto it = c.params.find(k);
      return it == c.params.end() ? d : std::stoll(it->second);
    };
    a_ = get("start_size", 4);
    r_ = get("recent_size", 252);
    h_ = get("heavy_size", 128);
    s_ = get("separator_size", 64);
    w_ = get("local_size", 256);
    const int64_t c_size = get("cache_size", 512);
    interval_ = name_ == "lazy_h2o" ? get("update_interval", 10)
                : name_ == "unified" ? get("update_interval", 0)
                                     : 0;
    if (name_ == "streaming") capacity_ = a_ + r_;
    if (name_ == "h2o" || name_ == "lazy_h2o") capacity_ = a_ + r_ + h_;
    if (name_ == "sepllm") capacity_ = c_size;
    if (name_ == "unified") capacity_ = a_ + s_ + h_ + w_;
    auto sc = c.params.find("scope");
    shared_ = name_ == "streaming" || name_ == "sepllm" ||
              (sc != c.params.end() && sc->second == "shared");
    auto seps = c.params.find("separators");
    if (seps != c.params.end()) {
      std::stringstream in(seps->second);
      std::string item;
      while (std::getline(in, item, ',')) seps_.insert(std::stoi(item));
    }
  }
  bool shared() const { return shared_; }
  // One step that fed n_new tokens; a prefill's application is a full selection.
  void tick(int64_t n_new) {
    ++counter_;
    prefill_ = n_new > 1;
  }

  std::vector<int64_t> select(int64_t key, const std::vector<int64_t>& pos,
                              const std::map<int64_t, int32_t>& tokens,
                              const std::function<double(int64_t)>& score) {
    const int64_t L = static_cast<int64_t>(pos.size());
    if (capacity_ < 0 || L <= capacity_) return pos;
    auto slice = [&](int64_t b, int64_t e) {
      return std::vector<int64_t>(pos.begin() + b, pos.begin() + e);
    };
    auto is_sep = [&](int64_t q) { return seps_.count(tokens.at(q)) > 0; };
    auto last_seps = [&](const std::vector<int64_t>& mid, int64_t n) {
      std::vector<int64_t> out;
      for (int64_t q : mid)
        if (is_sep(q)) out.push_back(q);
      if (static_cast<int64_t>(out.size()) > n) out.erase(out.begin(), out.end() - n);
      return n > 0 ? out : std::vector<int64_t>{};
    };
    if (name_ == "streaming") {
      auto out = slice(0, a_);
      auto tail = slice(L - r_, L);
      out.insert(out.end(), tail.begin(), tail.end());
      return out;
    }
    if (name_ == "sepllm") {
      auto out = slice(0, a_);
      auto seps = last_seps(slice(a_, L - w_), s_);
      out.insert(out.end(), seps.begin(), seps.end());
      auto tail = slice(L - w_, L);
      out.insert(out.end(), tail.begin(), tail.end());
      return out;
    }
    const int64_t w = name_ == "unified" ? w_ : r_;
    const int64_t s = name_ == "unified" ? s_ : 0;
    auto mid = slice(a_, L - w);
    auto kept = last_seps(mid, s);
    std::set<int64_t> kept_seps(kept.begin(), kept.end());
    std::vector<int64_t> rest;
    for (int64_t q : mid)
      if (!kept_seps.count(q)) rest.push_back(q);
    std::set<int64_t> keep(pos.begin(), pos.begin() + a_);
    keep.insert(pos.end() - w, pos.end());
    keep.insert(kept_seps.begin(), kept_seps.end());
    if (interval_ == 0 || counter_ % interval_ == 0 || prefill_) {
      auto ranked = rest;
      std::stable_sort(ranked.begin(), ranked.end(), [&](int64_t x, int64_t y) {
        return score(x) > score(y) || (score(x) == score(y) && x < y);
      });
      if (static_cast<int64_t>(ranked.size()) > h_) ranked.resize(h_);
      if (interval_) protected_[key] = std::set<int64_t>(ranked.begin(), ranked.end());
      keep.insert(ranked.begin(), ranked.end());
      std::vector<int64_t> out;
      for (int64_t q : pos)
        if (keep.count(q)) out.push_back(q);
      return out;
    }
    std::set<int64_t>& prot = protected_[key];
    std::set<int64_t> evict;
    for (int64_t i = 0; i < L - capacity_; ++i) {
      int64_t victim = -1;
      for (int64_t q : rest)
        if (!prot.count(q) && !evict.count(q)) { victim = q; break; }
      if (victim < 0)
        for (int64_t q : rest)
          if (!evict.count(q)) { victim = q; break; }
      evict.insert(victim);
      prot.erase(victim);
    }
    std::vector<int64_t> out;
    for (int64_t q : pos)
      if (!evict.count(q)) out.push_back(q);
    return out;
  }

 private:
  std::string name_;
  int64_t a_, r_, h_, s_, w_, interval_, capacity_ = -1, counter_ = 0;
  bool shared_ = false, prefill_ = false;
  std::set<int32_t> seps_;
  std::map<int64_t, std::set<int64_t>> protected_;
};

void run_case(const Case& cs, int64_t prefill, int64_t steps, uint32_t seed,
              std::vector<int32_t> score_layers = {0}) {
  SCOPED_TRACE(cs.policy + " seed " + std::to_string(seed));
  const int32_t n_layers = 2, n_heads = 2;
  std::vector<kvc_param> params;
  for (auto& [k, v] : cs.params) params.push_back({k.c_str(), v.c_str()});
  TestHost host(n_layers, n_heads);
  PolicyInstance policy(load_policy(cs.policy, KVC_BUILD_POLICY_DIR), host.host, params.data(),
                        params.size());
  Reference ref(cs);
  auto sl = cs.params.count("score_layers") ? score_layers : std::vector<int32_t>{0};

  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> quarter(0, 4), token(0, 9);
  Cache c(n_layers, n_heads);
  std::vector<std::vector<int64_t>> ref_pos(c.heads.size());
  std::vector<std::map<int64_t, float>> acc(c.heads.size());  // what the engine accumulated
  std::map<int64_t, int32_t> tokens;
  int64_t t = 0;
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t n_new = step == 0 ? prefill : 1;
    for (int64_t i = 0; i < n_new; ++i, ++t) {
      tokens[t] = token(rng) < 3 ? 99 : 5 + token(rng);  // 30 % separators
      for (auto& h : c.heads) {
        h.positions.push_back(t);
        h.tokens.push_back(tokens[t]);
        h.acc.push_back(0.f);
      }
      for (auto& p : ref_pos) p.push_back(t);
    }
    // Attention "probabilities" of this step, added to every cached entry.
    for (size_t g = 0; g < c.heads.size(); ++g) {
      auto& h = c.heads[g];
      for (int64_t r = 0; r < h.size(); ++r) {
        h.acc[r] += 0.25f * static_cast<float>(quarter(rng));
        acc[g][h.positions[r]] = h.acc[r];
      }
    }
    // kvc
    PlanBuffer pb(c);
    c.make_view(n_new);
    ASSERT_NO_THROW(test::step_decide(policy, c.view, pb.plan)) << "step " << step;
    pb.apply(c);
    // reference
    ref.tick(n_new);
    if (ref.shared()) {
      auto score = [&](int64_t q) {
        double s = 0;
        for (int32_t l : sl)
          for (int32_t hh = 0; hh < n_heads; ++hh) s += acc[l * n_heads + hh].at(q);
        return s;
      };
      auto kept = ref.select(0, ref_pos[0], tokens, score);
      for (auto& p : ref_pos) p = kept;
    } else {
      for (size_t g = 0; g < ref_pos.size(); ++g)
        ref_pos[g] = ref.select(static_cast<int64_t>(g), ref_pos[g], tokens,
                                [&](int64_t q) { return double(acc[g].at(q)); });
    }
    for (size_t g = 0; g < c.heads.size(); ++g)
      ASSERT_EQ(c.heads[g].positions, ref_pos[g]) << "step " << step << " head " << g;
  }
}

const std::map<std::string, std::string> kH2O = {
    {"start_size", "2"}, {"recent_size", "5"}, {"heavy_size", "4"}};
const std::map<std::string, std::string> kUnified = {
    {"start_size", "2"}, {"separator_size", "3"}, {"heavy_size", "3"},
    {"local_size", "5"}, {"separators", "99"}};

std::map<std::string, std::string> with(std::map<std::string, std::string> m,
                                        std::map<std::string, std::string> extra) {
  for (auto& [k, v] : extra) m[k] = v;
  return m;
}

TEST(PolicyReferenceSim, Streaming) {
  run_case({"streaming", {{"start_size", "3"}, {"recent_size", "6"}}}, 1, 60, 1);
  run_case({"streaming", {{"start_size", "3"}, {"recent_size", "6"}}}, 25, 30, 2);
}

TEST(PolicyReferenceSim, H2OPerHead) {
  for (uint32_t seed : {1u, 2u, 3u}) run_case({"h2o", kH2O}, 1, 120, seed);
  run_case({"h2o", kH2O}, 30, 40, 4);
}

TEST(PolicyReferenceSim, H2OShared) {
  run_case({"h2o", with(kH2O, {{"scope", "shared"}})}, 1, 120, 5);
  run_case({"h2o", with(kH2O, {{"scope", "shared"}, {"score_layers", "0,1"}})}, 1, 120, 6,
           {0, 1});
  run_case({"h2o", with(kH2O, {{"scope", "shared"}, {"score_layers", "1"}})}, 1, 120, 7, {1});
}

TEST(PolicyReferenceSim, LazyH2O) {
  for (const char* n : {"1", "3", "10"}) {
    run_case({"lazy_h2o", with(kH2O, {{"update_interval", n}})}, 1, 150, 8);
    run_case({"lazy_h2o", with(kH2O, {{"update_interval", n}, {"scope", "shared"}})}, 1, 150,
             9);
  }
  run_case({"lazy_h2o", with(kH2O, {{"update_interval", "4"}})}, 30, 60, 10);
}

TEST(PolicyReferenceSim, SepLLM) {
  const Case c{"sepllm", {{"start_size", "2"}, {"separator_size", "3"}, {"local_size", "4"},
                          {"cache_size", "14"}, {"separators", "99"}}};
  run_case(c, 1, 150, 11);
  run_case(c, 40, 30, 12);
}

TEST(PolicyReferenceSim, Unified) {
  run_case({"unified", kUnified}, 1, 150, 13);
  run_case({"unified", with(kUnified, {{"scope", "shared"}})}, 1, 150, 14);
  run_case({"unified", with(kUnified, {{"update_interval", "3"}})}, 1, 150, 15);
  run_case({"unified", with(kUnified, {{"update_interval", "5"}, {"scope", "shared"}})}, 1, 150,
           16);
  run_case({"unified", with(kUnified, {{"update_interval", "2"}})}, 30, 50, 17);
}

}  // namespace
}  // namespace kvc
