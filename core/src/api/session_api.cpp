// C ABI: sessions.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>

#include "api/guard.h"
#include "api/handles.h"
#include "api/structs.h"
#include "kvc/kvc.h"

using namespace kvc;

namespace kvc {
// What a kvc_policy_params holds (policy/policy_api.cpp).
std::shared_ptr<const LoadedPolicy> policy_of(const kvc_policy_params& p);
const PolicyParams& params_of(const kvc_policy_params& p);
}  // namespace kvc

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
  o.policy_params = nullptr;
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

// The exported ABI 1.0 *_init functions fill the 1.0 layout; the header's macros call
// *_init_size with the caller's sizeof (see "Conventions" in kvc.h).
KVC_API void(kvc_session_options_init)(kvc_session_options* options) {
  init_struct(options, default_session_options(), offsetof(kvc_session_options, policy_params));
}

KVC_API void kvc_session_options_init_size(kvc_session_options* options, size_t struct_size) {
  init_struct(options, default_session_options(), struct_size);
}

KVC_API void(kvc_score_options_init)(kvc_score_options* options) {
  init_struct(options, default_score_options(), offsetof(kvc_score_options, cache_entries));
}

KVC_API void kvc_score_options_init_size(kvc_score_options* options, size_t struct_size) {
  init_struct(options, default_score_options(), struct_size);
}

KVC_API void(kvc_cache_stats_init)(kvc_cache_stats* stats) {
  init_struct(stats, kvc_cache_stats{}, sizeof(kvc_cache_stats));
}

KVC_API void kvc_cache_stats_init_size(kvc_cache_stats* stats, size_t struct_size) {
  init_struct(stats, kvc_cache_stats{}, struct_size);
}

KVC_API kvc_status kvc_session_create(kvc_model* model, const kvc_session_options* options,
                                      kvc_session** out) {
  return guarded([&] {
    require_arg(out, "kvc_session_create", "out");
    *out = nullptr;
    require_arg(model, "kvc_session_create", "model");
    const kvc_session_options o =
        read_struct(options, default_session_options(), "kvc_session_options");
    SessionConfig config;
    config.positions = o.positions;
    config.max_entries = o.max_entries;
    std::unique_ptr<PolicyParams> text_params;  // the kvc_param interface, parsed once here
    const std::string name = o.policy ? o.policy : "";
    if (o.policy_params != nullptr) {
      if (!name.empty() || o.n_params > 0 || o.policy_path != nullptr)
        fail(KVC_ERR_INVALID_ARGUMENT,
             "kvc_session_options: policy_params is set, so policy, params and policy_path must "
             "be NULL/0 (the handle names the policy and holds its parameters)");
      config.policy = policy_of(*o.policy_params);
      config.params = &params_of(*o.policy_params);
    } else if (!name.empty()) {
      config.policy = load_policy(name, o.policy_path ? o.policy_path : "");
      text_params = config.policy->make_params();
      text_params->set_all(o.params, o.n_params);
      config.params = text_params.get();
    } else if (o.n_params > 0) {
      fail(KVC_ERR_INVALID_ARGUMENT,
           "kvc_session_options: parameters were given but no policy (the full cache takes none)");
    }
    auto handle = std::make_unique<kvc_session>();
    handle->session = std::make_unique<Session>(*model->model, config);
    *out = handle.release();
  });
}

KVC_API void kvc_session_free(kvc_session* session) { delete session; }

KVC_API kvc_status kvc_session_reset(kvc_session* session) {
  return guarded([&] {
    require_arg(session, "kvc_session_reset", "session");
    session->session->reset();
  });
}

KVC_API kvc_status kvc_session_step(kvc_session* session, const int32_t* tokens,
                                    size_t n_tokens, kvc_logits which, float* logits,
                                    size_t logits_capacity) {
  return guarded([&] {
    require_arg(session, "kvc_session_step", "session");
    require_arg(tokens, "kvc_session_step", "tokens");
    session->session->step(tokens, static_cast<int64_t>(n_tokens), which, logits, logits_capacity);
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
    session->session->score(tokens, static_cast<int64_t>(n_tokens), o, nll, nll_capacity);
  });
}

KVC_API void kvc_score_report_init_size(kvc_score_report* report, size_t struct_size) {
  init_struct(report, kvc_score_report{}, struct_size);
}

KVC_API kvc_status kvc_session_score_report(const kvc_session* session,
                                            kvc_score_report* report) {
  return guarded([&] {
    require_arg(session, "kvc_session_score_report", "session");
    require_arg(report, "kvc_session_score_report", "report");
    write_struct(report, session->session->score_report(), "kvc_score_report");
  });
}

KVC_API kvc_status kvc_session_cache_stats(const kvc_session* session, kvc_cache_stats* stats) {
  return guarded([&] {
    require_arg(session, "kvc_session_cache_stats", "session");
    require_arg(stats, "kvc_session_cache_stats", "stats");
    write_struct(stats, session->session->stats(), "kvc_cache_stats");
  });
}

KVC_API kvc_status kvc_session_cache_counts(const kvc_session* session, int64_t* counts,
                                            size_t capacity) {
  return guarded([&] {
    require_arg(session, "kvc_session_cache_counts", "session");
    const KvCache& cache = session->session->cache();
    const size_t n = cache.n_head_caches();
    if (counts == nullptr || capacity < n)
      fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_cache_counts: the buffer holds " +
                                         std::to_string(counts ? capacity : 0) + " values, " +
                                         std::to_string(n) + " (n_layers * n_heads) are needed");
    for (size_t i = 0; i < n; ++i) counts[i] = cache.head_at(i).size();
  });
}

KVC_API kvc_status kvc_session_cache_entries(const kvc_session* session, int32_t layer,
                                             int32_t head, int64_t* positions,
                                             int32_t* token_ids, size_t capacity,
                                             size_t* n_entries) {
  return guarded([&] {
    require_arg(session, "kvc_session_cache_entries", "session");
    const KvCache& c = session->session->cache();
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

KVC_API kvc_status kvc_session_policy_report(const kvc_session* session, char* json,
                                             size_t capacity, size_t* json_len) {
  return guarded([&] {
    require_arg(session, "kvc_session_policy_report", "session");
    const std::string& r = session->session->policy_report();
    if (json_len) *json_len = r.size();
    if (json == nullptr || capacity < r.size())
      fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_policy_report: the buffer holds " +
                                         std::to_string(json ? capacity : 0) + " bytes, " +
                                         std::to_string(r.size()) + " are needed");
    std::memcpy(json, r.data(), r.size());
    if (capacity > r.size()) json[r.size()] = '\0';
  });
}

KVC_API kvc_status kvc_session_cache_scores(const kvc_session* session, int32_t layer,
                                            int32_t head, float* scores, size_t capacity,
                                            size_t* n_entries) {
  return guarded([&] {
    require_arg(session, "kvc_session_cache_scores", "session");
    const std::vector<float>& v = session->session->cache_scores(layer, head);
    if (n_entries) *n_entries = v.size();
    if (scores != nullptr && capacity < v.size())
      fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_session_cache_scores: the buffer holds " +
                                         std::to_string(capacity) + " values, " +
                                         std::to_string(v.size()) + " are needed");
    if (scores) std::copy(v.begin(), v.end(), scores);
  });
}

KVC_API kvc_status kvc_session_keep(kvc_session* session, int32_t layer, int32_t head,
                                    const int32_t* ranks, size_t n_ranks) {
  return guarded([&] {
    require_arg(session, "kvc_session_keep", "session");
    session->session->keep(layer, head, ranks, n_ranks);
  });
}

}  // extern "C"
