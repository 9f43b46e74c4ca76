// C ABI: sessions.
#include "api/guard.h"
#include "api/structs.h"
#include "engine/session.h"
#include "kvc/kvc.h"

using namespace kvc;

namespace {
kvc_session_options default_session_options() {
  kvc_session_options o{};
  o.struct_size = sizeof(o);
  o.policy = nullptr;
  o.params = nullptr;
  o.n_params = 0;
  o.positions = KVC_POSITIONS_SHIFT;
  o.max_entries = 0;
  o.policy_path = nullptr;
  return o;
}
kvc_score_options default_score_options() {
  kvc_score_options o{};
  o.struct_size = sizeof(o);
  o.mode = KVC_SCORE_STREAM;
  return o;
}
}  // namespace

extern "C" {

KVC_API void kvc_session_options_init(kvc_session_options* options) {
  if (options) *options = default_session_options();
}

KVC_API void kvc_score_options_init(kvc_score_options* options) {
  if (options) *options = default_score_options();
}

KVC_API void kvc_cache_stats_init(kvc_cache_stats* stats) {
  if (!stats) return;
  *stats = kvc_cache_stats{};
  stats->struct_size = sizeof(*stats);
}

KVC_API kvc_status kvc_session_create(kvc_model* model, const kvc_session_options* options,
                                      kvc_session** out) {
  return guarded([&] {
    require_arg(out, "kvc_session_create", "out");
    *out = nullptr;
    require_arg(model, "kvc_session_create", "model");
    const kvc_session_options o =
        read_struct(options, default_session_options(), "kvc_session_options");
    *out = new kvc_session(model, o);
  });
}

KVC_API void kvc_session_free(kvc_session* session) { delete session; }

KVC_API kvc_status kvc_session_reset(kvc_session* session) {
  return guarded([&] {
    require_arg(session, "kvc_session_reset", "session");
    session->reset();
  });
}

KVC_API kvc_status kvc_session_step(kvc_session* session, const int32_t* tokens,
                                    size_t n_tokens, kvc_logits which, float* logits,
                                    size_t logits_capacity) {
  return guarded([&] {
    require_arg(session, "kvc_session_step", "session");
    require_arg(tokens, "kvc_session_step", "tokens");
    session->step(tokens, static_cast<int64_t>(n_tokens), which, logits, logits_capacity);
  });
}

KVC_API kvc_status kvc_session_score(kvc_session* session, const int32_t* tokens,
                                     size_t n_tokens, const kvc_score_options* options,
                                     float* nll, size_t nll_capacity) {
  return guarded([&] {
    require_arg(session, "kvc_session_score", "session");
    require_arg(tokens, "kvc_session_score", "tokens");
    const kvc_score_options o =
        read_struct(options, default_score_options(), "kvc_score_options");
    session->score(tokens, static_cast<int64_t>(n_tokens), o.mode, nll, nll_capacity);
  });
}

KVC_API kvc_status kvc_session_cache_stats(const kvc_session* session, kvc_cache_stats* stats) {
  return guarded([&] {
    require_arg(session, "kvc_session_cache_stats", "session");
    require_arg(stats, "kvc_session_cache_stats", "stats");
    write_struct(stats, session->stats(), "kvc_cache_stats");
  });
}

KVC_API kvc_status kvc_session_cache_counts(const kvc_session* session, int64_t* counts,
                                            size_t capacity) {
  return guarded([&] {
    require_arg(session, "kvc_session_cache_counts", "session");
    const size_t n = session->cache.n_head_caches();
    if (counts == nullptr || capacity < n)
      fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_cache_counts: the buffer holds " +
                                         std::to_string(counts ? capacity : 0) + " values, " +
                                         std::to_string(n) + " (n_layers * n_heads) are needed");
    for (size_t i = 0; i < n; ++i) counts[i] = session->cache.head_at(i).size();
  });
}

KVC_API kvc_status kvc_session_cache_entries(const kvc_session* session, int32_t layer,
                                             int32_t head, int64_t* positions,
                                             int32_t* token_ids, size_t capacity,
                                             size_t* n_entries) {
  return guarded([&] {
    require_arg(session, "kvc_session_cache_entries", "session");
    const KvCache& c = session->cache;
    if (layer < 0 || layer >= c.n_layers() || head < 0 || head >= c.n_heads())
      fail(KVC_ERR_OUT_OF_RANGE, "kvc_session_cache_entries: (layer " + std::to_string(layer) +
                                     ", head " + std::to_string(head) + ") is outside [0, " +
                                     std::to_string(c.n_layers()) + ") x [0, " +
                                     std::to_string(c.n_heads()) + ")");
    const HeadCache& hc = c.head(layer, head);
    const size_t n = static_cast<size_t>(hc.size());
    if (n_entries) *n_entries = n;
    if ((positions || token_ids) && capacity < n)
      fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_cache_entries: the buffers hold " +
                                         std::to_string(capacity) + " entries, " +
                                         std::to_string(n) + " are needed");
    for (size_t i = 0; i < n; ++i) {
      if (positions) positions[i] = hc.positions()[i];
      if (token_ids) token_ids[i] = hc.token_ids()[i];
    }
  });
}

KVC_API kvc_status kvc_session_keep(kvc_session* session, int32_t layer, int32_t head,
                                    const int32_t* ranks, size_t n_ranks) {
  return guarded([&] {
    require_arg(session, "kvc_session_keep", "session");
    session->keep(layer, head, ranks, n_ranks);
  });
}

}  // extern "C"
