// C ABI: samplers and generation (ABI minor 2).
#include <memory>
#include <string>
#include <vector>

#include "api/guard.h"
#include "api/handles.h"
#include "api/structs.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "kvc/kvc.h"

using namespace kvc;

struct kvc_sampler {
  std::unique_ptr<Sampler> sampler;
};

namespace {

kvc_generate_options default_generate_options() {
  kvc_generate_options o{};
  o.struct_size = sizeof(o);
  o.max_tokens = 128;
  return o;
}

kvc_generate_result default_generate_result() {
  kvc_generate_result r{};
  r.struct_size = sizeof(r);
  r.stop_reason = KVC_STOP_MAX_TOKENS;
  r.stop_index = -1;
  return r;
}

GenerateConfig generate_config(const kvc_generate_options& o) {
  GenerateConfig c;
  c.max_tokens = o.max_tokens;
  if (o.n_stop > 0 && o.stop == nullptr)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_generate_options.stop is NULL with n_stop " +
                                       std::to_string(o.n_stop));
  for (size_t i = 0; i < o.n_stop; ++i) {
    if (o.stop[i] == nullptr)
      fail(KVC_ERR_INVALID_ARGUMENT,
           "kvc_generate_options.stop[" + std::to_string(i) + "] is NULL");
    c.stop.emplace_back(o.stop[i]);
  }
  if (o.n_stop_tokens > 0 && o.stop_tokens == nullptr)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_generate_options.stop_tokens is NULL with "
                                   "n_stop_tokens " + std::to_string(o.n_stop_tokens));
  if (o.n_stop_tokens > 0) c.stop_tokens.assign(o.stop_tokens, o.stop_tokens + o.n_stop_tokens);
  c.on_token = o.on_token;
  c.user_data = o.user_data;
  return c;
}

}  // namespace

extern "C" {

KVC_API void kvc_sampler_options_init_size(kvc_sampler_options* options, size_t struct_size) {
  init_struct(options, default_sampler_options(), struct_size);
}

KVC_API kvc_status kvc_sampler_create(const kvc_sampler_options* options, kvc_sampler** out) {
  return guarded([&] {
    require_arg(out, "kvc_sampler_create", "out");
    *out = nullptr;
    const kvc_sampler_options o =
        read_struct(options, default_sampler_options(), "kvc_sampler_options");
    auto handle = std::make_unique<kvc_sampler>();
    handle->sampler = std::make_unique<Sampler>(sampler_config(o));
    *out = handle.release();
  });
}

KVC_API void kvc_sampler_free(kvc_sampler* sampler) { delete sampler; }

KVC_API kvc_status kvc_sampler_reset(kvc_sampler* sampler) {
  return guarded([&] {
    require_arg(sampler, "kvc_sampler_reset", "sampler");
    sampler->sampler->reset();
  });
}

KVC_API kvc_status kvc_sampler_accept(kvc_sampler* sampler, const int32_t* tokens,
                                      size_t n_tokens) {
  return guarded([&] {
    require_arg(sampler, "kvc_sampler_accept", "sampler");
    sampler->sampler->accept(tokens, n_tokens);
  });
}

KVC_API kvc_status kvc_sampler_sample(kvc_sampler* sampler, const float* logits,
                                      size_t n_logits, int32_t* token) {
  return guarded([&] {
    require_arg(sampler, "kvc_sampler_sample", "sampler");
    require_arg(logits, "kvc_sampler_sample", "logits");
    require_arg(token, "kvc_sampler_sample", "token");
    *token = sampler->sampler->sample(logits, n_logits);
  });
}

KVC_API void kvc_generate_options_init_size(kvc_generate_options* options, size_t struct_size) {
  init_struct(options, default_generate_options(), struct_size);
}

KVC_API void kvc_generate_result_init_size(kvc_generate_result* result, size_t struct_size) {
  init_struct(result, default_generate_result(), struct_size);
}

KVC_API kvc_status kvc_generate(kvc_session* session, kvc_sampler* sampler,
                                const int32_t* prompt, size_t n_prompt,
                                const kvc_generate_options* options, int32_t* tokens,
                                size_t tokens_capacity, kvc_generate_result* result) {
  return guarded([&] {
    require_arg(session, "kvc_generate", "session");
    if (n_prompt > 0) require_arg(prompt, "kvc_generate", "prompt");
    // A bad result struct is reported before anything is generated.
    if (result != nullptr && result->struct_size < sizeof(size_t))
      fail(KVC_ERR_INVALID_ARGUMENT, "kvc_generate_result.struct_size is " +
                                         std::to_string(result->struct_size) +
                                         "; set it to sizeof(kvc_generate_result) (use "
                                         "kvc_generate_result_init)");
    const kvc_generate_options o =
        read_struct(options, default_generate_options(), "kvc_generate_options");
    const GenerateConfig config = generate_config(o);
    std::unique_ptr<Sampler> greedy;
    Sampler* s = sampler != nullptr ? sampler->sampler.get() : nullptr;
    if (s == nullptr) {
      SamplerConfig c;
      c.temperature = 0;
      greedy = std::make_unique<Sampler>(c);
      s = greedy.get();
    }
    const kvc_generate_result r =
        generate(*session->session, *s, prompt, n_prompt, config, tokens, tokens_capacity);
    if (result != nullptr) write_struct(result, r, "kvc_generate_result");
  });
}

}  // extern "C"
