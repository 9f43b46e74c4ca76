#include "engine/session.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "engine/forward.h"
#include "tokenizer/tokenizer.h"

namespace kvc {

namespace {

// -log softmax(logits)[target], accumulated in double.
float nll_of(const float* logits, int64_t vocab, int32_t target) {
  float max_logit = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  return static_cast<float>(std::log(sum) + max_logit - logits[target]);
}

}  // namespace

// Policies ask the engine for token ids of strings (e.g. SepLLM's separators).
int64_t Session::host_tokenize(void* host_data, const char* text, int32_t* ids,
                               size_t capacity) {
  const auto* model = static_cast<const Model*>(host_data);
  if (!model->tokenizer || text == nullptr) return -1;
  try {
    const std::vector<int32_t> out = model->tokenizer->encode(text);
    for (size_t i = 0; i < out.size() && i < capacity; ++i) ids[i] = out[i];
    return static_cast<int64_t>(out.size());
  } catch (...) {
    return -1;
  }
}

Session::Session(const Model& m, const SessionConfig& config)
    : model_(m),
      cache_(m.config.n_layers, m.config.n_heads, m.config.head_dim),
      positions_(config.positions),
      max_entries_(config.max_entries) {
  if (config.positions != KVC_POSITIONS_SHIFT && config.positions != KVC_POSITIONS_ORIGINAL)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_options.positions: unknown value " +
                                       std::to_string(config.positions) +
                                       " (expected KVC_POSITIONS_SHIFT or KVC_POSITIONS_ORIGINAL)");
  if (config.max_entries < 0)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_options.max_entries: " +
                                       std::to_string(config.max_entries) +
                                       " is negative (expected 0 = no limit, or a count)");
  if (m.device) {
    backend_ = m.device->create_session();
    cache_.set_store_kv(false);  // keys and values live on the device
  } else {
    backend_ = std::make_unique<CpuForward>(*m.weights, m.n_threads);
  }
  if (!config.policy) return;
  kvc_policy_host host{};
  host.struct_size = sizeof(host);
  host.host_data = const_cast<Model*>(&model_);  // read-only: host_tokenize takes it as const
  host.n_layers = m.config.n_layers;
  host.n_heads = m.config.n_heads;
  host.vocab_size = m.config.vocab_size;
  host.max_position_embeddings = m.config.max_position_embeddings;
  host.tokenize = host_tokenize;
  policy_ = std::make_unique<PolicyInstance>(config.policy, host, *config.params);
  signals_ = policy_->setup().signals;
}

void Session::check_room(int64_t n_new) const {
  if (max_entries_ > 0 && cache_.max_entries() + n_new > max_entries_)
    fail(KVC_ERR_OUT_OF_RANGE,
         "appending " + std::to_string(n_new) + " tokens to a cache holding " +
             std::to_string(cache_.max_entries()) + " entries would exceed max_entries = " +
             std::to_string(max_entries_));
}

void Session::step(const int32_t* tokens, int64_t n, kvc_logits which, float* logits,
                       size_t logits_capacity) {
  if (n <= 0) fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_step: n_tokens must be positive");
  const int64_t vocab = model_.config.vocab_size;
  size_t needed = 0;
  switch (which) {
    case KVC_LOGITS_NONE: break;
    case KVC_LOGITS_LAST: needed = static_cast<size_t>(vocab); break;
    case KVC_LOGITS_ALL: needed = static_cast<size_t>(n * vocab); break;
    default:
      fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_step: unknown logits mode " +
                                         std::to_string(which));
  }
  if (needed > 0 && (logits == nullptr || logits_capacity < needed))
    fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_step: the logits buffer holds " +
                                       std::to_string(logits ? logits_capacity : 0) +
                                       " floats, " + std::to_string(needed) + " are needed");
  check_room(n);
  ForwardRequest req;
  req.tokens = tokens;
  req.n_tokens = n;
  req.first_position = n_seen_;
  req.positions = positions_;
  req.signals = signals_;
  req.which = which;
  req.logits = logits;
  backend_->run(req, cache_);
  n_seen_ += n;
  consult_policy(n);
}

void Session::consult_policy(int64_t n_new) {
  if (!policy_) return;
  policy_->count_step();
  cache_.counts(counts_);
  if (!policy_->triggered(counts_.data(), cache_.n_layers(), cache_.n_heads())) return;
  if (signals_ != 0) backend_->fetch_signals(cache_, signals_);
  const kvc_cache_view& view = cache_.make_view(n_seen_, n_new, signals_);
  const int64_t stride = std::max<int64_t>(cache_.max_entries(), 1);
  plan_ranks_.resize(cache_.n_head_caches() * static_cast<size_t>(stride));
  plan_counts_.assign(cache_.n_head_caches(), 0);
  kvc_plan plan{};
  plan.struct_size = sizeof(plan);
  plan.kind = KVC_PLAN_NOTHING;
  plan.ranks = plan_ranks_.data();
  plan.stride = stride;
  plan.counts = plan_counts_.data();
  policy_->decide(view, plan);  // validated inside; throws KVC_ERR_POLICY on a bad plan
  if (plan.kind == KVC_PLAN_NOTHING) return;
  const int64_t before = cache_.total_entries();
  cache_.apply(plan);
  backend_->on_plan_applied(plan, cache_);
  if (cache_.total_entries() != before) ++n_evictions_;
}

void Session::score(const int32_t* tokens, int64_t n, kvc_score_mode mode, float* nll,
                        size_t nll_capacity) {
  if (n <= 0) fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_score: n_tokens must be positive");
  if (nll != nullptr && nll_capacity < static_cast<size_t>(n - 1))
    fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_score: the nll buffer holds " +
                                       std::to_string(nll_capacity) + " floats, " +
                                       std::to_string(n - 1) + " are needed");
  const int64_t vocab = model_.config.vocab_size;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail(KVC_ERR_OUT_OF_RANGE, "token id " + std::to_string(tokens[i]) + " at index " +
                                     std::to_string(i) + " is outside the vocabulary [0, " +
                                     std::to_string(vocab) + ")");
  if (mode == KVC_SCORE_PREFILL) {
    logits_.resize(static_cast<size_t>(n * vocab));
    step(tokens, n, KVC_LOGITS_ALL, logits_.data(), logits_.size());
    if (nll)
      for (int64_t i = 0; i + 1 < n; ++i)
        nll[i] = nll_of(&logits_[static_cast<size_t>(i * vocab)], vocab, tokens[i + 1]);
    return;
  }
  if (mode != KVC_SCORE_STREAM)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_score_options.mode: unknown value " +
                                       std::to_string(mode));
  logits_.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < n; ++i) {
    const bool scored = i + 1 < n && nll != nullptr;
    step(&tokens[i], 1, scored ? KVC_LOGITS_LAST : KVC_LOGITS_NONE, logits_.data(),
         logits_.size());
    if (scored) nll[i] = nll_of(logits_.data(), vocab, tokens[i + 1]);
  }
}

void Session::reset() {
  cache_.clear();
  backend_->on_heads_changed(-1, -1);
  n_seen_ = 0;
  n_evictions_ = 0;
  if (policy_) policy_->reset();
}

void Session::keep(int32_t layer, int32_t head, const int32_t* ranks, size_t n_ranks) {
  const auto& cfg = model_.config;
  if (layer < -1 || layer >= cfg.n_layers)
    fail(KVC_ERR_OUT_OF_RANGE, "kvc_session_keep: layer " + std::to_string(layer) +
                                   " is outside [-1, " + std::to_string(cfg.n_layers) + ")");
  if (head < -1 || head >= cfg.n_heads)
    fail(KVC_ERR_OUT_OF_RANGE, "kvc_session_keep: head " + std::to_string(head) +
                                   " is outside [-1, " + std::to_string(cfg.n_heads) + ")");
  if (n_ranks > 0 && ranks == nullptr)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_keep: ranks is NULL");
  // Validate against every selected (layer, head) before changing any of them.
  for (int l = 0; l < cfg.n_layers; ++l) {
    if (layer != -1 && l != layer) continue;
    for (int h = 0; h < cfg.n_heads; ++h) {
      if (head != -1 && h != head) continue;
      const int64_t size = cache_.head(l, h).size();
      for (size_t i = 0; i < n_ranks; ++i) {
        if (ranks[i] < 0 || ranks[i] >= size || (i > 0 && ranks[i] <= ranks[i - 1]))
          fail(KVC_ERR_INVALID_ARGUMENT,
               "kvc_session_keep: ranks must be strictly increasing and within [0, " +
                   std::to_string(size) + ") for layer " + std::to_string(l) + " head " +
                   std::to_string(h) + "; rank " + std::to_string(ranks[i]) + " at index " +
                   std::to_string(i) + " is not");
      }
    }
  }
  for (int l = 0; l < cfg.n_layers; ++l) {
    if (layer != -1 && l != layer) continue;
    for (int h = 0; h < cfg.n_heads; ++h) {
      if (head != -1 && h != head) continue;
      cache_.head(l, h).keep(ranks, static_cast<int64_t>(n_ranks));
    }
  }
  backend_->on_heads_changed(layer, head);
}

kvc_cache_stats Session::stats() const {
  kvc_cache_stats s{};
  s.struct_size = sizeof(s);
  s.n_layers = cache_.n_layers();
  s.n_heads = cache_.n_heads();
  s.capacity = policy_ ? policy_->setup().capacity : -1;
  s.max_entries = max_entries_;
  s.min_entries = cache_.min_entries();
  s.max_entries_now = cache_.max_entries();
  s.total_entries = cache_.total_entries();
  s.n_tokens_seen = n_seen_;
  s.n_evictions = n_evictions_;
  return s;
}

}  // namespace kvc
