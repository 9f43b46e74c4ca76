#include "runtime.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "files.h"

namespace fs = std::filesystem;

namespace kvc::hosts {

void check(kvc_status status, const std::string& what) {
  if (status == KVC_OK) return;
  std::string message = kvc_last_error();
  throw RunError(what + ": " + kvc_status_name(status) + (message.empty() ? "" : ": " + message));
}

const char* backend_name(kvc_backend backend) {
  switch (backend) {
    case KVC_BACKEND_CPU: return "cpu";
    case KVC_BACKEND_CUDA: return "cuda";
    default: return "auto";
  }
}

const char* dtype_name(kvc_dtype dtype) {
  switch (dtype) {
    case KVC_DTYPE_F32: return "f32";
    case KVC_DTYPE_BF16: return "bf16";
    case KVC_DTYPE_F16: return "f16";
    default: return "auto";
  }
}

nlohmann::ordered_json LoadedModel::describe() const {
  return {{"path", path},
          {"n_layers", info.n_layers},
          {"n_heads", info.n_heads},
          {"head_dim", info.head_dim},
          {"hidden_size", info.hidden_size},
          {"vocab_size", info.vocab_size},
          {"max_position_embeddings", info.max_position_embeddings},
          {"backend", backend_name(info.backend)},
          {"dtype", dtype_name(info.weight_dtype)},
          {"threads", info.n_threads},
          {"weight_bytes", info.weight_bytes},
          {"library_version", kvc_version_string()}};
}

std::string model_path(const Options& options) {
  std::string path = options.get_string("model", "path");
  if (path == kDefaultModel) return resolve_resource(path).string();
  return path;
}

LoadedModel load_model(const Options& options, uint64_t seed) {
  LoadedModel loaded;
  loaded.path = model_path(options);
  std::error_code ec;
  if (loaded.path.rfind("synthetic:", 0) != 0) {
    if (!fs::exists(loaded.path, ec)) {
      throw RunError("model '" + loaded.path + "' not found: no such folder (give a model "
                     "folder with config.json and model.safetensors, e.g. one made by "
                     "tools/download_model.py, or synthetic:pythia-70m)");
    }
    if (!fs::is_directory(loaded.path, ec)) {
      throw RunError("model '" + loaded.path + "' is not a folder");
    }
  }
  kvc_model_options mo;
  kvc_model_options_init(&mo);
  const std::string backend = options.get_string("model", "backend");
  mo.backend = backend == "cpu" ? KVC_BACKEND_CPU
               : backend == "cuda" ? KVC_BACKEND_CUDA
                                   : KVC_BACKEND_AUTO;
  const std::string dtype = options.get_string("model", "dtype");
  mo.weight_dtype = dtype == "f32"    ? KVC_DTYPE_F32
                    : dtype == "bf16" ? KVC_DTYPE_BF16
                    : dtype == "f16"  ? KVC_DTYPE_F16
                                      : KVC_DTYPE_AUTO;
  mo.n_threads = static_cast<int32_t>(options.get_int("model", "threads"));
  mo.seed = seed;
  kvc_model* model = nullptr;
  check(kvc_model_load(loaded.path.c_str(), &mo, &model), "loading model '" + loaded.path + "'");
  loaded.model.reset(model);
  kvc_model_info_init(&loaded.info);
  check(kvc_model_get_info(model, &loaded.info), "model info");
  return loaded;
}

PolicyCatalog::PolicyCatalog(const std::string& search_path) : search_path_(search_path) {
  kvc_policy_list* list = nullptr;
  check(kvc_policy_list_load(search_path.empty() ? nullptr : search_path.c_str(), &list),
        "listing policies");
  list_.reset(list);
}

const kvc_policy_info* PolicyCatalog::find(const std::string& name) const {
  for (size_t i = 0; i < kvc_policy_list_size(list_.get()); ++i) {
    const kvc_policy_info* info = kvc_policy_list_get(list_.get(), i);
    if (info && info->name && name == info->name) return info;
  }
  return nullptr;
}

const kvc_policy_info* PolicyCatalog::find_path(const std::string& path) const {
  std::error_code ec;
  for (size_t i = 0; i < kvc_policy_list_size(list_.get()); ++i) {
    const kvc_policy_info* info = kvc_policy_list_get(list_.get(), i);
    if (info && info->path && fs::equivalent(info->path, path, ec)) return info;
  }
  return nullptr;
}

std::vector<std::string> PolicyCatalog::names() const {
  std::vector<std::string> names;
  for (size_t i = 0; i < kvc_policy_list_size(list_.get()); ++i) {
    const kvc_policy_info* info = kvc_policy_list_get(list_.get(), i);
    if (info && info->name) names.emplace_back(info->name);
  }
  return names;
}

std::vector<std::string> PolicyCatalog::ordered_names() const {
  static const std::vector<std::string> kSeedOrder = {"baseline", "streaming", "h2o",
                                                      "lazy_h2o", "sepllm",    "unified"};
  auto rank = [](const std::string& name) {
    auto it = std::find(kSeedOrder.begin(), kSeedOrder.end(), name);
    return static_cast<size_t>(it - kSeedOrder.begin());
  };
  std::vector<std::string> names = this->names();
  std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    return rank(a) < rank(b);
  });
  return names;
}

std::string PolicyCatalog::errors() const { return kvc_policy_list_errors(list_.get()); }

nlohmann::ordered_json param_value_json(const std::string& text) {
  if (text == "true") return true;
  if (text == "false") return false;
  if (!text.empty()) {
    char* end = nullptr;
    long long i = std::strtoll(text.c_str(), &end, 10);
    if (end == text.c_str() + text.size()) return i;
    double d = std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size()) return d;
  }
  return text;
}

nlohmann::ordered_json RunSpec::params_json() const {
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  for (const auto& [name, value] : params) {
    const auto it = std::find(schema.begin(), schema.end(), name);
    const kvc_param_type type = it == schema.end()
                                    ? KVC_PARAM_CHOICE
                                    : schema_types[static_cast<size_t>(it - schema.begin())];
    const bool is_list = type == KVC_PARAM_INT_LIST || type == KVC_PARAM_STRING_LIST;
    if (!is_list) {
      config[name] = param_value_json(value);
      continue;
    }
    // "[0, 1]" or "0,1" -> [0, 1]
    std::string text = value;
    if (!text.empty() && text.front() == '[' && text.back() == ']') {
      text = text.substr(1, text.size() - 2);
    }
    nlohmann::ordered_json items = nlohmann::ordered_json::array();
    std::stringstream stream(text);
    for (std::string item; std::getline(stream, item, ',');) {
      const auto b = item.find_first_not_of(" \t");
      const auto e = item.find_last_not_of(" \t");
      if (b == std::string::npos) continue;
      items.push_back(param_value_json(item.substr(b, e - b + 1)));
    }
    config[name] = items;
  }
  return config;
}

namespace {

bool looks_like_path(const std::string& mode) {
  return mode.find('/') != std::string::npos ||
         (mode.size() > 3 && mode.compare(mode.size() - 3, 3, ".so") == 0);
}

void set_param(std::vector<std::pair<std::string, std::string>>& params, const std::string& name,
               const std::string& value) {
  for (auto& [k, v] : params) {
    if (k == name) {
      v = value;
      return;
    }
  }
  params.emplace_back(name, value);
}

}  // namespace

RunSpec make_run(const Options& options, const PolicyCatalog& catalog, const std::string& mode,
                 bool strict, std::vector<std::string>* warnings) {
  RunSpec run;
  run.mode = mode;
  run.policy = mode;
  run.search_path = catalog.search_path();
  run.positions = options.get_string("policy", "positions") == "original"
                      ? KVC_POSITIONS_ORIGINAL
                      : KVC_POSITIONS_SHIFT;
  const kvc_policy_info* info = nullptr;
  if (looks_like_path(mode)) {
    std::error_code ec;
    if (!fs::exists(mode, ec)) throw UsageError("--mode: policy file '" + mode + "' not found");
    PolicyCatalog local(fs::path(mode).parent_path().string());
    info = local.find_path(mode);
    if (!info) {
      // Let the engine say why it is not a valid plugin.
      check(kvc_policy_check(mode.c_str(), nullptr, nullptr, 0), "--mode '" + mode + "'");
      throw UsageError("--mode: '" + mode + "' is not a loadable policy plugin");
    }
    run.mode = info->name;
    for (size_t i = 0; i < info->n_params; ++i) {
      run.schema.emplace_back(info->params[i].name);
      run.schema_types.push_back(info->params[i].type);
    }
  } else {
    info = catalog.find(mode);
    bool lazy_alias = false;
    if (!info && mode == "lazy_unified") {
      // The seed's lazy_unified mode is the unified policy with an update interval.
      info = catalog.find("unified");
      lazy_alias = info != nullptr;
      if (lazy_alias) run.policy = "unified";
    }
    if (!info) {
      auto names = catalog.names();
      std::string hint = closest(mode, names);
      std::string listed;
      for (const auto& n : names) listed += (listed.empty() ? "" : ", ") + n;
      std::string message = "--mode: unknown policy '" + mode + "'" +
                            (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                            "; installed: " + (listed.empty() ? "none" : listed) + ", or all";
      std::string errors = catalog.errors();
      if (!errors.empty()) message += "\nplugins that failed to load:\n" + errors;
      throw UsageError(message);
    }
    for (size_t i = 0; i < info->n_params; ++i) {
      run.schema.emplace_back(info->params[i].name);
      run.schema_types.push_back(info->params[i].type);
    }
  }
  auto has = [&](const std::string& name) {
    return std::find(run.schema.begin(), run.schema.end(), name) != run.schema.end();
  };
  const bool lazy = run.mode.rfind("lazy", 0) == 0;
  for (const auto& key : seed_policy_keys()) {
    const Option& o = options.get("policy", key);
    if (!has(key)) {
      if (strict && o.source != Source::Default && warnings) {
        warnings->push_back("--" + key + " is ignored: policy '" + run.mode +
                            "' has no parameter '" + key + "'");
      }
      continue;
    }
    if (std::holds_alternative<std::monostate>(o.value)) continue;  // the policy's default
    // The seed's --update_interval is for the lazy modes; others get it only from the flag.
    if (key == "update_interval" && o.source != Source::CommandLine && !lazy) continue;
    set_param(run.params, key, to_text(o.value));
  }
  for (const auto& [name, value] : options.extra_policy_params()) {
    if (strict || has(name)) set_param(run.params, name, value);
  }
  std::vector<kvc_param> params;
  for (const auto& [name, value] : run.params) params.push_back({name.c_str(), value.c_str()});
  kvc_status status = kvc_policy_check(run.policy.c_str(),
                                       run.search_path.empty() ? nullptr : run.search_path.c_str(),
                                       params.data(), params.size());
  if (status != KVC_OK) {
    throw UsageError("policy '" + run.mode + "' rejected its parameters: " +
                     kvc_status_name(status) + ": " + kvc_last_error());
  }
  return run;
}

SessionPtr make_session(kvc_model* model, const RunSpec& run, int64_t max_entries) {
  std::vector<kvc_param> params;
  for (const auto& [name, value] : run.params) params.push_back({name.c_str(), value.c_str()});
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = run.policy.c_str();
  so.params = params.data();
  so.n_params = params.size();
  so.positions = run.positions;
  so.max_entries = max_entries;
  so.policy_path = run.search_path.empty() ? nullptr : run.search_path.c_str();
  kvc_session* session = nullptr;
  check(kvc_session_create(model, &so, &session), "creating a session of policy '" + run.mode + "'");
  return SessionPtr(session);
}

kvc_cache_stats cache_stats(const kvc_session* session) {
  kvc_cache_stats stats;
  kvc_cache_stats_init(&stats);
  check(kvc_session_cache_stats(session, &stats), "cache statistics");
  return stats;
}

std::string describe_policies(const PolicyCatalog& catalog) {
  static const char* kTypes[] = {"int", "float", "bool", "choice", "int list", "string list"};
  std::ostringstream out;
  for (const auto& name : catalog.names()) {
    const kvc_policy_info* info = catalog.find(name);
    out << info->name << " " << (info->version ? info->version : "") << "  "
        << (info->description ? info->description : "") << "\n";
    if (info->path) out << "    file: " << info->path << "\n";
    for (size_t i = 0; i < info->n_params; ++i) {
      const kvc_param_info& p = info->params[i];
      int type = static_cast<int>(p.type);
      out << "    " << p.name << " (" << (type >= 0 && type < 6 ? kTypes[type] : "?");
      if (p.choices && *p.choices) out << ": " << p.choices;
      out << ", default " << (p.default_value ? p.default_value : "") << ")  "
          << (p.help ? p.help : "") << "\n";
    }
  }
  std::string errors = catalog.errors();
  if (!errors.empty()) out << "plugins that failed to load:\n" << errors << "\n";
  return out.str();
}

bool list_policies_if_asked(Options& options, int argc, char** argv) {
  bool asked = false;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--list_policies")
      asked = true;
    else
      rest.emplace_back(argv[i]);
  }
  if (!asked) return false;
  options.parse(rest);
  PolicyCatalog catalog(options.get_opt_string("policy", "search_path").value_or(""));
  std::fputs(describe_policies(catalog).c_str(), stdout);
  return true;
}

}  // namespace kvc::hosts
