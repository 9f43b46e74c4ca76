#include "engine/session.h"

#include <algorithm>
#include <cmath>
#include <optional>

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
  if (!config.policy) {
    policy_report_ = R"({"policy":null,"kind":"full cache"})";
    return;
  }
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
  // The windowed signals cover the last rule.signal_window queries (validated >= 1 when asked).
  cache_.set_signal_window(static_cast<int32_t>(policy_->setup().rule.signal_window), signals_);
  policy_report_ = policy_->report(*config.params, model_.tokenizer.get());
}

const std::vector<float>& Session::cache_scores(int32_t layer, int32_t head) {
  const uint32_t signal = policy_ ? policy_->ranking_signal() : 0;
  if (signal == 0)
    fail(KVC_ERR_NOT_FOUND,
         std::string("kvc_session_cache_scores: ") +
             (policy_ ? policy_->policy().label() : std::string("the full cache")) +
             " ranks its entries by no signal");
  if (layer < 0 || layer >= cache_.n_layers() || head < 0 || head >= cache_.n_heads())
    fail(KVC_ERR_OUT_OF_RANGE, "kvc_session_cache_scores: (layer " + std::to_string(layer) +
                                   ", head " + std::to_string(head) + ") is outside [0, " +
                                   std::to_string(cache_.n_layers()) + ") x [0, " +
                                   std::to_string(cache_.n_heads()) + ")");
  backend_->fetch_signals(cache_, signal);
  HeadCache& h = cache_.head(layer, head);
  switch (signal) {
    case KVC_SIGNAL_ACC_ATTENTION: return h.acc_attention();
    case KVC_SIGNAL_LAST_ATTENTION: return h.last_attention();
    case KVC_SIGNAL_KEY_NORM: return h.key_norms();
    case KVC_SIGNAL_WINDOW_ATTENTION:
    case KVC_SIGNAL_PIVOTAL_COUNT:
    case KVC_SIGNAL_KEY_MEAN_COSINE:
      if (h.stores_kv()) h.derive(signal);  // else fetch_signals wrote them
      return h.derived(signal);
  }
  fail(KVC_ERR_UNSUPPORTED, std::string("kvc_session_cache_scores: the signal ") +
                                signal_name(signal) + " is not kept per entry");
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
  if (RuleEngine* rule = policy_->rule(); rule != nullptr && backend_->runs_rules()) {
    // The backend decides where the signals live (the CUDA backend with KVC_CUDA_RULES=device,
    // docs/cuda.md): the same plan as below, applied to cache_ and to the device alike.
    if (backend_->decide_rule(*rule, n_new, cache_)) ++n_evictions_;
    return;
  }
  if (signals_ != 0) backend_->fetch_signals(cache_, signals_);
  const kvc_cache_view& view = cache_.make_view(n_seen_, n_new, signals_);
  kvc_plan plan = plan_buffers(std::max<int64_t>(cache_.max_entries(), 1));
  policy_->decide(view, plan);  // validated inside; throws KVC_ERR_POLICY on a bad plan
  if (plan.kind == KVC_PLAN_NOTHING) return;
  const int64_t before = cache_.total_entries();
  cache_.apply(plan);
  backend_->on_plan_applied(plan, cache_);
  if (cache_.total_entries() != before) ++n_evictions_;
}

// Where score() writes, per fed token (each may be null).
struct Session::ScoreOutputs {
  float* nll;                // [n - 1], or [n] with a next token
  int64_t* cache_entries;    // [n]
  int64_t* evicted;          // [n]
  float* logits;             // [n * vocab]
  const int32_t* tokens;
  int64_t n;
  const int32_t* next_token;
  // The token step i is scored against, or -1.
  int32_t target(int64_t i) const {
    return i + 1 < n ? tokens[i + 1] : next_token ? *next_token : -1;
  }
};

// Exact block scoring (docs/block-scoring.md): runs after each query of a block in each
// layer and takes that layer's decision of that step, as the token-by-token run takes it after
// the whole step; with a LayerZero policy, layer 0 decides and the later layers replay it.
class Session::BlockHook final : public QueryHook {
 public:
  BlockHook(Session& s, int64_t n, PolicyInstance::Layerwise mode)
      : s_(s), base_step_(s.policy_->steps()), base_seen_(s.n_seen_),
        size_after(static_cast<size_t>(n), 0), evicted(static_cast<size_t>(n), 0),
        replay_(mode == PolicyInstance::Layerwise::LayerZero ? static_cast<size_t>(n) : 0) {}

  void after_query(int layer, int64_t t, KvCache& cache) override {
    const int H = cache.n_heads();
    const auto layer_sizes = [&](int64_t* most) {
      int64_t total = 0;
      *most = 0;
      for (int h = 0; h < H; ++h) {
        total += cache.head(layer, h).size();
        *most = std::max(*most, cache.head(layer, h).size());
      }
      return total;
    };
    int64_t most = 0;
    const int64_t before = layer_sizes(&most);
    Recorded* record = replay_.empty() ? nullptr : &replay_[static_cast<size_t>(t)];
    if (record != nullptr && layer > 0) {
      if (!record->ranks.empty() || record->kind != KVC_PLAN_NOTHING) {
        kvc_plan p{};
        p.struct_size = sizeof p;
        p.kind = record->kind;
        p.shared = 1;
        p.ranks = record->ranks.data();
        p.stride = static_cast<int64_t>(record->ranks.size());
        p.counts = &record->count;
        cache.apply_layer(layer, p);
      }
    } else {
      s_.counts_.resize(cache.n_head_caches());
      for (int h = 0; h < H; ++h)
        s_.counts_[static_cast<size_t>(layer) * H + h] = cache.head(layer, h).size();
      if (s_.policy_->layer_triggered(layer, s_.counts_.data(), H)) {
        const kvc_cache_view& view =
            cache.make_layer_view(layer, base_seen_ + t + 1, 1, s_.signals_);
        kvc_plan plan = s_.plan_buffers(std::max<int64_t>(most, 1));
        if (s_.policy_->decide_layer(layer, base_step_ + t + 1, view, plan)) {
          cache.apply_layer(layer, plan);
          if (record != nullptr) {
            record->kind = plan.kind;
            record->count = plan.counts[0];
            record->ranks.assign(plan.ranks, plan.ranks + plan.counts[0]);
          }
        }
      }
    }
    const int64_t after = layer_sizes(&most);
    size_after[static_cast<size_t>(t)] = std::max(size_after[static_cast<size_t>(t)], most);
    evicted[static_cast<size_t>(t)] += before - after;
  }

 private:
  struct Recorded {  // layer 0's plan of one step (shared), for the later layers
    kvc_plan_kind kind = KVC_PLAN_NOTHING;
    int64_t count = 0;
    std::vector<int32_t> ranks;
  };
  Session& s_;
  int64_t base_step_, base_seen_;

 public:
  std::vector<int64_t> size_after, evicted;  // per query of the block

 private:
  std::vector<Recorded> replay_;
};

kvc_plan Session::plan_buffers(int64_t stride) {
  plan_ranks_.resize(cache_.n_head_caches() * static_cast<size_t>(stride));
  plan_counts_.assign(cache_.n_head_caches(), 0);
  kvc_plan plan{};
  plan.struct_size = sizeof(plan);
  plan.kind = KVC_PLAN_NOTHING;
  plan.ranks = plan_ranks_.data();
  plan.stride = stride;
  plan.counts = plan_counts_.data();
  return plan;
}

std::string Session::block_obstacle(int64_t block) const {
  if (!backend_->supports_per_query())
    return "the CUDA backend scores one token per forward pass (block scoring is CPU-only)";
  if (!policy_) return "";
  std::string why;
  const PolicyInstance::Layerwise mode = policy_->layerwise(&why);
  if (mode == PolicyInstance::Layerwise::No) return why;
  if (max_entries_ > 0 && mode != PolicyInstance::Layerwise::None) {
    // The block path cannot stop at the exact step a tight max_entries would; it runs only when
    // the policy's capacity keeps every step within it.
    const int64_t capacity = policy_->setup().capacity;
    if (capacity < 0 || std::max(cache_.max_entries(), capacity) + 1 > max_entries_)
      return "max_entries = " + std::to_string(max_entries_) + " is below what a step of " +
             "this policy may hold (capacity + 1), so each step is checked alone";
  }
  (void)block;
  return "";
}

void Session::score(const int32_t* tokens, int64_t n, const kvc_score_options& o, float* nll,
                    size_t nll_capacity) {
  if (n <= 0) fail(KVC_ERR_INVALID_ARGUMENT, "kvc_session_score: n_tokens must be positive");
  const int64_t vocab = model_.config.vocab_size;
  // The targets: token i+1 for i < n-1, then the caller's next token if given.
  const int64_t n_scored = o.next_token ? n : n - 1;
  if (nll != nullptr && nll_capacity < static_cast<size_t>(n_scored))
    fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_score: the nll buffer holds " +
                                       std::to_string(nll_capacity) + " floats, " +
                                       std::to_string(n_scored) + " are needed");
  if (o.next_token && (*o.next_token < 0 || *o.next_token >= vocab))
    fail(KVC_ERR_OUT_OF_RANGE, "kvc_score_options.next_token " + std::to_string(*o.next_token) +
                                   " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  if (o.logits != nullptr && o.logits_capacity < static_cast<size_t>(n * vocab))
    fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_score_options.logits holds " +
                                       std::to_string(o.logits_capacity) + " floats, " +
                                       std::to_string(n * vocab) + " (n_tokens * vocab_size) "
                                       "are needed");
  if (o.block_size < 0 || o.block_size > kMaxScoreBlock)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_score_options.block_size: " +
                                       std::to_string(o.block_size) + " is outside [0, " +
                                       std::to_string(kMaxScoreBlock) + "]");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail(KVC_ERR_OUT_OF_RANGE, "token id " + std::to_string(tokens[i]) + " at index " +
                                     std::to_string(i) + " is outside the vocabulary [0, " +
                                     std::to_string(vocab) + ")");
  const ScoreOutputs out{nll, o.cache_entries, o.evicted, o.logits, tokens, n, o.next_token};
  report_reason_.clear();
  if (o.mode == KVC_SCORE_PREFILL) {
    float* logits = o.logits;
    if (logits == nullptr) {
      logits_.resize(static_cast<size_t>(n * vocab));
      logits = logits_.data();
    }
    const int64_t before = cache_.max_entries(), total = cache_.total_entries();
    step(tokens, n, KVC_LOGITS_ALL, logits, static_cast<size_t>(n * vocab));
    for (int64_t i = 0; i < n; ++i) {
      if (nll && out.target(i) >= 0) nll[i] = nll_of(&logits[i * vocab], vocab, out.target(i));
      // One policy application, after the last token.
      if (out.cache_entries) out.cache_entries[i] = i + 1 < n ? before + i + 1 : cache_.max_entries();
      if (out.evicted)
        out.evicted[i] = i + 1 < n ? 0
                                   : total + n * static_cast<int64_t>(cache_.n_head_caches()) -
                                         cache_.total_entries();
    }
    report_block_ = static_cast<int32_t>(n);
    report_path_ = "prefill";
    return;
  }
  if (o.mode != KVC_SCORE_STREAM)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_score_options.mode: unknown value " +
                                       std::to_string(o.mode));
  const int64_t block = o.block_size == 0 ? KVC_DEFAULT_BLOCK_SIZE : o.block_size;
  const std::string why = block > 1 ? block_obstacle(block) : "";
  if (block > 1 && why.empty()) {
    score_blocks(tokens, n, block, out);
    report_block_ = static_cast<int32_t>(block);
    report_path_ = "block";
  } else {
    score_tokens(tokens, n, out);
    report_block_ = 1;
    report_path_ = "token";
    report_reason_ = why;
  }
}

void Session::score_tokens(const int32_t* tokens, int64_t n, const ScoreOutputs& out) {
  const int64_t vocab = model_.config.vocab_size;
  logits_.resize(static_cast<size_t>(vocab));
  const int64_t heads = static_cast<int64_t>(cache_.n_head_caches());
  for (int64_t i = 0; i < n; ++i) {
    float* logits = out.logits ? out.logits + i * vocab : logits_.data();
    const bool want = out.logits != nullptr || (out.target(i) >= 0 && out.nll != nullptr);
    const int64_t total = cache_.total_entries();
    step(&tokens[i], 1, want ? KVC_LOGITS_LAST : KVC_LOGITS_NONE, logits,
         static_cast<size_t>(vocab));
    if (out.nll && out.target(i) >= 0) out.nll[i] = nll_of(logits, vocab, out.target(i));
    if (out.cache_entries) out.cache_entries[i] = cache_.max_entries();
    if (out.evicted) out.evicted[i] = total + heads - cache_.total_entries();
  }
}

void Session::score_blocks(const int32_t* tokens, int64_t n, int64_t block,
                           const ScoreOutputs& out) {
  const int64_t vocab = model_.config.vocab_size;
  const PolicyInstance::Layerwise mode =
      policy_ ? policy_->layerwise(nullptr) : PolicyInstance::Layerwise::None;
  for (int64_t off = 0; off < n; off += block) {
    const int64_t nb = std::min(block, n - off);
    if (mode == PolicyInstance::Layerwise::None) check_room(nb);
    float* logits = out.logits ? out.logits + off * vocab : nullptr;
    if (logits == nullptr) {
      logits_.resize(static_cast<size_t>(nb * vocab));
      logits = logits_.data();
    }
    std::optional<BlockHook> hook;
    if (mode != PolicyInstance::Layerwise::None) hook.emplace(*this, nb, mode);
    const int64_t before = cache_.max_entries();
    ForwardRequest req;
    req.tokens = tokens + off;
    req.n_tokens = nb;
    req.first_position = n_seen_;
    req.positions = positions_;
    req.signals = signals_;
    req.which = KVC_LOGITS_ALL;
    req.logits = logits;
    req.per_query = hook ? &*hook : nullptr;
    backend_->run(req, cache_);
    n_seen_ += nb;
    for (int64_t t = 0; t < nb; ++t) {
      if (policy_) policy_->count_step();
      const int64_t i = off + t;
      if (out.nll && out.target(i) >= 0)
        out.nll[i] = nll_of(&logits[t * vocab], vocab, out.target(i));
      if (out.cache_entries)
        out.cache_entries[i] = hook ? hook->size_after[static_cast<size_t>(t)] : before + t + 1;
      const int64_t evicted = hook ? hook->evicted[static_cast<size_t>(t)] : 0;
      if (out.evicted) out.evicted[i] = evicted;
      if (evicted > 0) ++n_evictions_;
    }
  }
}

kvc_score_report Session::score_report() const {
  kvc_score_report r{};
  r.struct_size = sizeof r;
  r.block_size = report_block_;
  r.path = report_path_.c_str();
  r.reason = report_reason_.c_str();
  return r;
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
  // Keys and values, head_dim elements each, at the backend's storage type.
  const int64_t entry_bytes =
      2 * static_cast<int64_t>(model_.config.head_dim * backend_->kv_value_bytes());
  int64_t slots = 0;
  for (size_t i = 0; i < cache_.n_head_caches(); ++i) slots += cache_.head_at(i).n_slots();
  s.kv_bytes = s.total_entries * entry_bytes;
  s.kv_bytes_reserved = slots * entry_bytes;
  return s;
}

}  // namespace kvc
