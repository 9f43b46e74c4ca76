#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <unordered_set>

#include "common/error.h"

namespace kvc {

namespace {

std::string number_text(double v) {
  std::ostringstream s;
  s.precision(9);
  s << v;
  return s.str();
}

[[noreturn]] void bad_field(const char* field, const std::string& value, const char* expected) {
  fail(KVC_ERR_INVALID_ARGUMENT, std::string("kvc_sampler_options.") + field + " is " + value +
                                     "; expected " + expected);
}

}  // namespace

kvc_sampler_options default_sampler_options() {
  kvc_sampler_options o{};
  o.struct_size = sizeof(o);
  o.temperature = 1.0f;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.repetition_penalty = 1.0f;
  o.repetition_last_n = 64;
  o.seed = 0;
  return o;
}

SamplerConfig sampler_config(const kvc_sampler_options& o) {
  if (!(std::isfinite(o.temperature) && o.temperature >= 0))
    bad_field("temperature", number_text(o.temperature), "a finite value >= 0 (0 = greedy)");
  if (o.top_k < 0)
    bad_field("top_k", std::to_string(o.top_k), ">= 0 (0 = off)");
  if (!(o.top_p > 0 && o.top_p <= 1))
    bad_field("top_p", number_text(o.top_p), "a value in (0, 1] (1 = off)");
  if (!(o.min_p >= 0 && o.min_p <= 1))
    bad_field("min_p", number_text(o.min_p), "a value in [0, 1] (0 = off)");
  if (!(std::isfinite(o.repetition_penalty) && o.repetition_penalty > 0))
    bad_field("repetition_penalty", number_text(o.repetition_penalty),
              "a finite value > 0 (1 = off)");
  if (o.repetition_last_n < -1)
    bad_field("repetition_last_n", std::to_string(o.repetition_last_n),
              ">= -1 (-1 = the whole history, 0 = none)");
  SamplerConfig c;
  c.temperature = o.temperature;
  c.top_k = o.top_k;
  c.top_p = o.top_p;
  c.min_p = o.min_p;
  c.repetition_penalty = o.repetition_penalty;
  c.repetition_last_n = o.repetition_last_n;
  c.seed = o.seed;
  return c;
}

Sampler::Sampler(const SamplerConfig& config) : config_(config) {}

void Sampler::reset() {
  history_.clear();
  draws_ = 0;
}

void Sampler::accept(const int32_t* tokens, size_t n) {
  if (n > 0 && tokens == nullptr)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_sampler_accept: tokens is NULL with n_tokens " +
                                       std::to_string(n));
  history_.insert(history_.end(), tokens, tokens + n);
}

double Sampler::uniform(uint64_t seed, uint64_t n) {
  uint64_t z = seed + (n + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

std::vector<Sampler::Candidate> Sampler::candidates(const float* logits, size_t n,
                                                    const uint8_t* allowed) const {
  if (n == 0 || logits == nullptr)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_sampler_sample: no logits (n_logits is " +
                                       std::to_string(n) + ")");
  if (n > static_cast<size_t>(INT32_MAX))
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_sampler_sample: n_logits " + std::to_string(n) +
                                       " exceeds the token id range");
  // 1. Repetition penalty, on the ids of the history window.
  std::vector<int32_t> penalized;
  const double penalty = config_.repetition_penalty;
  if (penalty != 1.0 && config_.repetition_last_n != 0 && !history_.empty()) {
    size_t from = 0;
    if (config_.repetition_last_n > 0 &&
        history_.size() > static_cast<size_t>(config_.repetition_last_n))
      from = history_.size() - static_cast<size_t>(config_.repetition_last_n);
    std::unordered_set<int32_t> seen;
    for (size_t i = from; i < history_.size(); ++i) {
      const int32_t id = history_[i];
      if (id >= 0 && static_cast<size_t>(id) < n && seen.insert(id).second)
        penalized.push_back(id);
    }
    std::sort(penalized.begin(), penalized.end());
  }
  auto logit = [&](int32_t id) {
    double l = logits[id];
    if (!penalized.empty() && std::binary_search(penalized.begin(), penalized.end(), id))
      l = l > 0 ? l / penalty : l * penalty;
    return l;
  };
  auto usable = [&](size_t i) {
    return (allowed == nullptr || allowed[i] != 0) && std::isfinite(logits[i]);
  };

  // 2. Greedy.
  if (config_.temperature == 0) {
    int32_t best = -1;
    double best_l = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!usable(i)) continue;
      const double l = logit(static_cast<int32_t>(i));
      if (best < 0 || l > best_l) {
        best = static_cast<int32_t>(i);
        best_l = l;
      }
    }
    if (best < 0)
      fail(KVC_ERR_INVALID_ARGUMENT, "kvc_sampler_sample: none of the " + std::to_string(n) +
                                         " logits is finite (and allowed)");
    return {{best, 1.0}};
  }

  // 3. Temperature, then the sorted candidates.
  struct Scored {
    double s;
    int32_t id;
  };
  std::vector<Scored> c;
  c.reserve(n);
  for (size_t i = 0; i < n; ++i)
    if (usable(i)) c.push_back({logit(static_cast<int32_t>(i)) / config_.temperature,
                                static_cast<int32_t>(i)});
  if (c.empty())
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_sampler_sample: none of the " + std::to_string(n) +
                                       " logits is finite (and allowed)");
  auto before = [](const Scored& a, const Scored& b) {
    return a.s > b.s || (a.s == b.s && a.id < b.id);
  };
  // 4. top_k.
  if (config_.top_k > 0 && static_cast<size_t>(config_.top_k) < c.size()) {
    const auto k = static_cast<std::ptrdiff_t>(config_.top_k);
    std::partial_sort(c.begin(), c.begin() + k, c.end(), before);
    c.resize(static_cast<size_t>(k));
  } else {
    std::sort(c.begin(), c.end(), before);
  }
  // 5. Softmax over what is left.
  const double s_max = c.front().s;
  std::vector<Candidate> out(c.size());
  double z = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    out[i] = {c[i].id, std::exp(c[i].s - s_max)};
    z += out[i].p;
  }
  // exp(-inf) = 0 when s underflows: such candidates cannot be drawn; drop them.
  for (auto& x : out) x.p /= z;
  while (out.size() > 1 && out.back().p == 0) out.pop_back();
  // 6. top_p.
  if (config_.top_p < 1) {
    double cum = 0;
    size_t keep = 0;
    while (keep < out.size() && cum < config_.top_p) cum += out[keep++].p;
    out.resize(std::max<size_t>(keep, 1));
  }
  // 7. min_p.
  if (config_.min_p > 0) {
    const double threshold = config_.min_p * out.front().p;
    size_t keep = 1;
    while (keep < out.size() && out[keep].p >= threshold) ++keep;
    out.resize(keep);
  }
  double total = 0;
  for (const auto& x : out) total += x.p;
  for (auto& x : out) x.p /= total;
  return out;
}

int32_t Sampler::sample(const float* logits, size_t n, const uint8_t* allowed) {
  const std::vector<Candidate> kept = candidates(logits, n, allowed);
  const double u = uniform(config_.seed, draws_);
  ++draws_;
  int32_t token = kept.back().id;
  if (kept.size() > 1) {
    double cum = 0;
    for (const auto& x : kept) {
      cum += x.p;
      if (cum > u) {
        token = x.id;
        break;
      }
    }
  } else {
    token = kept.front().id;
  }
  history_.push_back(token);
  return token;
}

}  // namespace kvc
