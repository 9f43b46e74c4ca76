// The C ABI of policy discovery and checking (kvc.h, "Policies").
#include <memory>
#include <string>
#include <vector>

#include "api/guard.h"
#include "policy/policy.h"

struct kvc_policy_list {
  std::vector<std::shared_ptr<const kvc::LoadedPolicy>> policies;  // keep the plugins alive
  std::vector<kvc_policy_info> infos;
  std::string errors;
};

extern "C" {

KVC_API kvc_status kvc_policy_list_load(const char* extra_path, kvc_policy_list** out) {
  return kvc::guarded([&] {
    kvc::require_arg(out, "kvc_policy_list_load", "out");
    *out = nullptr;
    auto list = std::make_unique<kvc_policy_list>();
    list->policies = kvc::discover_policies(extra_path ? extra_path : "", &list->errors);
    for (const auto& p : list->policies) {
      kvc_policy_info info{};
      info.struct_size = sizeof info;
      info.name = p->desc->name;
      info.version = p->desc->version;
      info.description = p->desc->description;
      info.path = p->path.c_str();
      info.n_params = p->params.size();
      info.params = p->params.empty() ? nullptr : p->params.data();
      list->infos.push_back(info);
    }
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
    // Create (and destroy) an instance without a model, so that the plugin's own checks of
    // its parameters run too; model dimensions are 0 and tokenize reports no tokenizer.
    kvc_policy_host host{};
    host.struct_size = sizeof host;
    kvc::PolicyInstance instance(policy, host, params, n_params);
  });
}

}  // extern "C"
