// The C ABI of policy discovery, typed parameters and checking (kvc.h, "Policies").
#include <memory>
#include <string>
#include <vector>

#include "api/guard.h"
#include "api/structs.h"
#include "policy/policy.h"

namespace {

kvc_policy_info info_of(const kvc::LoadedPolicy& p) {
  kvc_policy_info info{};
  info.struct_size = sizeof info;
  info.name = p.desc->name;
  info.version = p.desc->version;
  info.description = p.desc->description;
  info.path = p.path.c_str();
  info.n_params = p.params.size();
  info.params = p.params.empty() ? nullptr : p.params.data();
  return info;
}

// Creates and destroys one instance without a model, so the plugin's own checks of its
// parameters run too; model dimensions are 0 and tokenize reports no tokenizer.
void check_without_model(std::shared_ptr<const kvc::LoadedPolicy> policy,
                         const kvc::PolicyParams& params) {
  kvc_policy_host host{};
  host.struct_size = sizeof host;
  kvc::PolicyInstance instance(std::move(policy), host, params);
}

}  // namespace

struct kvc_policy_list {
  std::vector<std::shared_ptr<const kvc::LoadedPolicy>> policies;  // keep the plugins alive
  std::vector<kvc_policy_info> infos;
  std::string errors;
};

struct kvc_policy_params {
  std::shared_ptr<const kvc::LoadedPolicy> policy;
  std::unique_ptr<kvc::PolicyParams> params;
  kvc_policy_info info{};
};

namespace kvc {

// The session's view of a kvc_policy_params (engine/session.cpp).
std::shared_ptr<const LoadedPolicy> policy_of(const kvc_policy_params& p) { return p.policy; }
const PolicyParams& params_of(const kvc_policy_params& p) { return *p.params; }

}  // namespace kvc

extern "C" {

KVC_API kvc_status kvc_policy_list_load(const char* extra_path, kvc_policy_list** out) {
  return kvc::guarded([&] {
    kvc::require_arg(out, "kvc_policy_list_load", "out");
    *out = nullptr;
    auto list = std::make_unique<kvc_policy_list>();
    list->policies = kvc::discover_policies(extra_path ? extra_path : "", &list->errors);
    for (const auto& p : list->policies) list->infos.push_back(info_of(*p));
    *out = list.release();
  });
}

KVC_API void kvc_policy_list_free(kvc_policy_list* list) { delete list; }

KVC_API size_t kvc_policy_list_size(const kvc_policy_list* list) {
  return list ? list->infos.size() : 0;
}

KVC_API const kvc_policy_info* kvc_policy_list_get(const kvc_policy_list* list, size_t index) {
  if (list == nullptr || index >= list->infos.size()) return nullptr;
  return &list->infos[index];
}

KVC_API const char* kvc_policy_list_errors(const kvc_policy_list* list) {
  return list ? list->errors.c_str() : "";
}

KVC_API kvc_status kvc_policy_check(const char* name_or_path, const char* extra_path,
                                    const kvc_param* params, size_t n_params) {
  return kvc::guarded([&] {
    kvc::require_arg(name_or_path, "kvc_policy_check", "name_or_path");
    auto policy = kvc::load_policy(name_or_path, extra_path ? extra_path : "");
    const auto parsed = policy->make_params();
    parsed->set_all(params, n_params);
    check_without_model(std::move(policy), *parsed);
  });
}

KVC_API void kvc_param_value_init_size(kvc_param_value* value, size_t struct_size) {
  kvc::init_struct(value, kvc_param_value{}, struct_size);
}

KVC_API kvc_status kvc_policy_params_create(const char* name_or_path, const char* extra_path,
                                            kvc_policy_params** out) {
  return kvc::guarded([&] {
    kvc::require_arg(out, "kvc_policy_params_create", "out");
    *out = nullptr;
    kvc::require_arg(name_or_path, "kvc_policy_params_create", "name_or_path");
    auto p = std::make_unique<kvc_policy_params>();
    p->policy = kvc::load_policy(name_or_path, extra_path ? extra_path : "");
    p->params = p->policy->make_params();
    p->info = info_of(*p->policy);
    *out = p.release();
  });
}

KVC_API void kvc_policy_params_free(kvc_policy_params* params) { delete params; }

// The setters share one shape: check the handle, then one PolicyParams call.
#define KVC_PARAMS_SETTER(function, ...)                      \
  return kvc::guarded([&] {                                   \
    kvc::require_arg(params, function, "params");             \
    params->params->__VA_ARGS__;                              \
  })

KVC_API kvc_status kvc_policy_params_set_text(kvc_policy_params* params, const char* name,
                                              const char* text) {
  KVC_PARAMS_SETTER("kvc_policy_params_set_text", set_text(name, text));
}

KVC_API kvc_status kvc_policy_params_set_int(kvc_policy_params* params, const char* name,
                                             int64_t value) {
  KVC_PARAMS_SETTER("kvc_policy_params_set_int", set_int(name, value));
}

KVC_API kvc_status kvc_policy_params_set_float(kvc_policy_params* params, const char* name,
                                               double value) {
  KVC_PARAMS_SETTER("kvc_policy_params_set_float", set_float(name, value));
}

KVC_API kvc_status kvc_policy_params_set_bool(kvc_policy_params* params, const char* name,
                                              int value) {
  KVC_PARAMS_SETTER("kvc_policy_params_set_bool", set_bool(name, value != 0));
}

KVC_API kvc_status kvc_policy_params_set_ints(kvc_policy_params* params, const char* name,
                                              const int64_t* values, size_t n_values) {
  KVC_PARAMS_SETTER("kvc_policy_params_set_ints", set_ints(name, values, n_values));
}

KVC_API kvc_status kvc_policy_params_set_strings(kvc_policy_params* params, const char* name,
                                                 const char* const* values, size_t n_values) {
  KVC_PARAMS_SETTER("kvc_policy_params_set_strings", set_strings(name, values, n_values));
}

#undef KVC_PARAMS_SETTER

KVC_API const kvc_policy_info* kvc_policy_params_policy(const kvc_policy_params* params) {
  return params ? &params->info : nullptr;
}

KVC_API kvc_status kvc_policy_params_get(const kvc_policy_params* params, size_t index,
                                         kvc_param_value* value, int* is_set) {
  return kvc::guarded([&] {
    kvc::require_arg(params, "kvc_policy_params_get", "params");
    kvc::require_arg(value, "kvc_policy_params_get", "value");
    const kvc::PolicyParams& p = *params->params;
    if (index >= p.size())
      kvc::fail(KVC_ERR_OUT_OF_RANGE, "kvc_policy_params_get: index " + std::to_string(index) +
                                          " is outside the schema of " +
                                          std::to_string(p.size()) + " parameters");
    kvc::write_struct(value, p.value(index), "kvc_param_value");
    if (is_set) *is_set = p.is_set(index) ? 1 : 0;
  });
}

KVC_API kvc_status kvc_policy_params_check(const kvc_policy_params* params) {
  return kvc::guarded([&] {
    kvc::require_arg(params, "kvc_policy_params_check", "params");
    check_without_model(params->policy, *params->params);
  });
}

}  // extern "C"
