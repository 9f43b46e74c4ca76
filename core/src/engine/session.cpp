#include "engine/session.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "engine/forward.h"
#include "tokenizer/tokenizer.h"

using kvc::fail;

namespace {

// Policies ask the engine for token ids of strings (e.g. SepLLM's separators).
int64_t host_tokenize(void* host_data, const char* text, int32_t* ids, size_t capacity) {
  const auto* model = static_cast<const kvc_model*>(host_data);
  if (!model->tokenizer || text == nullptr) return -1;
  try {
    const std::vector<int32_t> out = model->tokenizer->impl->encode(text);
    for (size_t i = 0; i < out.size() && i < capacity; ++i) ids[i] = out[i];
    return static_cast<int64_t>(out.size());
  } catch (...) {
    return -1;
  }
}

// -log softmax(logits)[target], accumulated in double.
float nll_of(const float* logits, int64_t vocab, int32_t target) {
  float max_logit = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  return static_cast<float>(std::log(sum) + max_logit - logits[target]);
}

}  // namespace

kvc_session::kvc_session(kvc_model* m, const kvc_session_options& options)
    : model(m),
      cache(m->config.n_layers, m->config.n_heads, m->config.head_dim),
      positions_(options.positions),
      max_entries_(options.max_entries) {
  if (m->device) {
    backend_ = m->device->create_session();
    cache.set_store_kv(false);  // keys and values live on the device
  } else {
    backend_ = std::make_unique<kvc::CpuForward>(*m->weights, m->n_threads);
  }
  if (options.positions != KVC_POSITIONS_SHIFT && options.positions != KVC_POSITIONS_ORIGINAL)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_options.positions: unknown value " +
                                       std::to_string(options.positions) +
                                       " (expected KVC_POSITIONS_SHIFT or KVC_POSITIONS_ORIGINAL)");
  if (options.max_entries < 0)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_options.max_entries: " +
                                       std::to_string(options.max_entries) +
                                       " is negative (expected 0 = no limit, or a count)");
  if (options.n_params > 0 && options.params == nullptr)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_options.params is NULL but n_params is " +
                                       std::to_string(options.n_params));
  const std::string name = options.policy ? options.policy : "";
  if (name.empty()) {
    if (options.n_params > 0)
      fail(KVC_ERR_INVALID_ARGUMENT,
           "kvc_session_options: parameters were given but no policy (the full cache takes none)");
    return;
  }
  kvc_policy_host host{};
  host.struct_size = sizeof(host);
  host.host_data = model;
  host.n_layers = m->config.n_layers;
  host.n_heads = m->config.n_heads;
  host.vocab_size = m->config.vocab_size;
  host.max_position_embeddings = m->config.max_position_embeddings;
  host.tokenize = host_tokenize;
  auto loaded = kvc::load_policy(name, options.policy_path ? options.policy_path : "");
  policy_ = std::make_unique<kvc::PolicyInstance>(std::move(loaded), host, options.params,
                                                  options.n_params);
  signals_ = policy_->setup().signals;
}

void kvc_session::check_room(int64_t n_new) const {
  if (max_entries_ > 0 && cache.max_entries() + n_new > max_entries_)
    fail(KVC_ERR_OUT_OF_RANGE,
         "appending " + std::to_string(n_new) + " tokens to a cache holding " +
             std::to_string(cache.max_entries()) + " entries would exceed max_entries = " +
             std::to_string(max_entries_));
}

void kvc_session::step(const int32_t* tokens, int64_t n, kvc_logits which, float* logits,
                       size_t logits_capacity) {
  if (n <= 0) fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_step: n_tokens must be positive");
  const int64_t vocab = model->config.vocab_size;
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
  kvc::ForwardRequest req;
  req.tokens = tokens;
  req.n_tokens = n;
  req.first_position = n_seen_;
  req.positions = positions_;
  req.signals = signals_;
  req.which = which;
  req.logits = logits;
  backend_->run(req, cache);
  n_seen_ += n;
  consult_policy(n);
}

void kvc_session::consult_policy(int64_t n_new) {
  if (!policy_) return;
  const kvc_policy_setup& setup = policy_->setup();
  const bool fire = setup.trigger == KVC_TRIGGER_EVERY_STEP ||
                    (setup.trigger == KVC_TRIGGER_OVER_CAPACITY &&
                     cache.max_entries() > setup.trigger_size);
  if (!fire) return;
  if (signals_ != 0) backend_->fetch_signals(cache, signals_);
  const kvc_cache_view& view = cache.make_view(n_seen_, n_new, signals_);
  const int64_t stride = std::max<int64_t>(cache.max_entries(), 1);
  plan_ranks_.resize(cache.n_head_caches() * static_cast<size_t>(stride));
  plan_counts_.assign(cache.n_head_caches(), 0);
  kvc_plan plan{};
  plan.struct_size = sizeof(plan);
  plan.kind = KVC_PLAN_NOTHING;
  plan.ranks = plan_ranks_.data();
  plan.stride = stride;
  plan.counts = plan_counts_.data();
  policy_->decide(view, plan);  // validated inside; throws KVC_ERR_POLICY on a bad plan
  if (plan.kind == KVC_PLAN_NOTHING) return;
  const int64_t before = cache.total_entries();
  cache.apply(plan);
  backend_->on_plan_applied(plan, cache);
  if (cache.total_entries() != before) ++n_evictions_;
}

void kvc_session::score(const int32_t* tokens, int64_t n, kvc_score_mode mode, float* nll,
                        size_t nll_capacity) {
  if (n <= 0) fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_score: n_tokens must be positive");
  if (nll != nullptr && nll_capacity < static_cast<size_t>(n - 1))
    fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_score: the nll buffer holds " +
                                       std::to_string(nll_capacity) + " floats, " +
                                       std::to_string(n - 1) + " are needed");
  const int64_t vocab = model->config.vocab_size;
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

void kvc_session::reset() {
  cache.clear();
  backend_->on_heads_changed(-1, -1);
  n_seen_ = 0;
  n_evictions_ = 0;
  if (policy_) policy_->reset();
}

void kvc_session::keep(int32_t layer, int32_t head, const int32_t* ranks, size_t n_ranks) {
  const auto& cfg = model->config;
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
      const int64_t size = cache.head(l, h).size();
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
      cache.head(l, h).keep(ranks, static_cast<int64_t>(n_ranks));
    }
  }
  backend_->on_heads_changed(layer, head);
}

kvc_cache_stats kvc_session::stats() const {
  kvc_cache_stats s{};
  s.struct_size = sizeof(s);
  s.n_layers = cache.n_layers();
  s.n_heads = cache.n_heads();
  s.capacity = policy_ ? policy_->setup().capacity : -1;
  s.max_entries = max_entries_;
  s.min_entries = cache.min_entries();
  s.max_entries_now = cache.max_entries();
  s.total_entries = cache.total_entries();
  s.n_tokens_seen = n_seen_;
  s.n_evictions = n_evictions_;
  return s;
}
