// The policy report of a session (kvc_session_policy_report): what ran, as JSON.
#include <nlohmann/json.hpp>

#include "policy/policy.h"
#include "tokenizer/tokenizer.h"

namespace kvc {

namespace {

using json = nlohmann::ordered_json;

json signal_names(uint32_t signals) {
  json out = json::array();
  for (uint32_t bit = 1; bit != 0 && bit <= signals; bit <<= 1)
    if (signals & bit) out.push_back(signal_name(bit));
  return out;
}

const char* trigger_name(kvc_trigger t) {
  switch (t) {
    case KVC_TRIGGER_NEVER: return "never";
    case KVC_TRIGGER_OVER_CAPACITY: return "over_capacity";
    case KVC_TRIGGER_EVERY_STEP: return "every_step";
  }
  return "unknown";
}

const char* scope_name(kvc_scope s) {
  switch (s) {
    case KVC_SCOPE_PER_HEAD: return "per_head";
    case KVC_SCOPE_SHARED: return "shared";
    case KVC_SCOPE_PER_LAYER: return "per_layer";
  }
  return "unknown";
}

json param_json(const kvc_param_value& v) {
  switch (v.type) {
    case KVC_PARAM_INT: return v.i;
    case KVC_PARAM_FLOAT: return v.f;
    case KVC_PARAM_BOOL: return v.i != 0;
    case KVC_PARAM_CHOICE: return v.n_strings > 0 ? v.strings[0] : "";
    case KVC_PARAM_INT_LIST: return std::vector<int64_t>(v.ints, v.ints + v.n_ints);
    case KVC_PARAM_STRING_LIST:
      return std::vector<std::string>(v.strings, v.strings + v.n_strings);
  }
  return nullptr;
}

json rule_json(const kvc_rule& r, const Tokenizer* tokenizer) {
  json out = {{"sink_size", r.sink_size},
              {"recent_size", r.recent_size},
              {"separator_size", r.separator_size}};
  json ids = json::array(), text = json::array();
  for (size_t i = 0; i < r.n_separator_ids; ++i) {
    const int32_t id = r.separator_ids[i];
    ids.push_back(id);
    if (tokenizer) text.push_back(tokenizer->decode(&id, 1));
  }
  out["separator_ids"] = ids;
  if (tokenizer) out["separator_text"] = text;
  out["heavy_size"] = r.heavy_size;
  if (r.layer_heavy_sizes != nullptr)
    out["layer_heavy_sizes"] =
        std::vector<int64_t>(r.layer_heavy_sizes, r.layer_heavy_sizes + r.n_layer_heavy_sizes);
  const bool heavy = r.heavy_size > 0 || r.layer_heavy_sizes != nullptr;
  out["heavy_signal"] = heavy ? json(signal_name(r.heavy_signal)) : json(nullptr);
  out["heavy_order"] = r.heavy_order == KVC_ORDER_SMALLEST ? "smallest" : "largest";
  out["tie_signal"] = r.tie_signal ? json(signal_name(r.tie_signal)) : json(nullptr);
  out["signal_window"] = r.signal_window;
  out["pooling"] = r.pooling == KVC_POOLING_AVG   ? json("avg")
                   : r.pooling == KVC_POOLING_MAX ? json("max")
                                                  : json(nullptr);
  if (r.pooling != KVC_POOLING_NONE) out["pool_kernel"] = r.pool_kernel;
  out["scope"] = scope_name(r.scope);
  if (r.scope == KVC_SCOPE_SHARED)
    out["score_layers"] = r.n_score_layers > 0
                              ? json(std::vector<int32_t>(r.score_layers,
                                                          r.score_layers + r.n_score_layers))
                              : json("all");
  out["allocation"] = r.allocation == KVC_ALLOCATION_ADAPTIVE ? "adaptive" : "uniform";
  if (r.allocation == KVC_ALLOCATION_ADAPTIVE) out["allocation_floor"] = r.allocation_floor;
  out["update_interval"] = r.update_interval;
  return out;
}

}  // namespace

const char* signal_name(uint32_t flag) {
  switch (flag) {
    case KVC_SIGNAL_ACC_ATTENTION: return "acc_attention";
    case KVC_SIGNAL_LAST_ATTENTION: return "last_attention";
    case KVC_SIGNAL_KEY_NORM: return "key_norm";
    case KVC_SIGNAL_WINDOW_ATTENTION: return "window_attention";
    case KVC_SIGNAL_KEY_MEAN_COSINE: return "key_mean_cosine";
    case KVC_SIGNAL_PIVOTAL_COUNT: return "pivotal_count";
  }
  return "unknown";
}

std::string PolicyInstance::report(const PolicyParams& params, const Tokenizer* tokenizer) const {
  const kvc_policy_descriptor& d = *policy_->desc;
  json out = {{"policy", d.name}, {"version", d.version}, {"file", policy_->path},
              {"abi", std::to_string(d.abi_major) + "." + std::to_string(d.abi_minor)}};
  json p = json::object();
  for (size_t i = 0; i < params.size(); ++i) p[params.info(i).name] = param_json(params.value(i));
  out["parameters"] = p;
  const kvc_policy_setup& s = setup_;
  out["kind"] = s.trigger == KVC_TRIGGER_NEVER ? "full cache" : rule_ ? "rule" : "callback";
  out["signals"] = signal_names(s.signals);
  out["trigger"] = trigger_name(s.trigger);
  out["trigger_size"] = s.trigger_size;
  out["capacity"] = s.capacity;
  if (rule_) out["rule"] = rule_json(s.rule, tokenizer);
  out["layer_local"] = layerwise(nullptr) != Layerwise::No;
  out["notes"] = notes_;
  return out.dump();
}

}  // namespace kvc
