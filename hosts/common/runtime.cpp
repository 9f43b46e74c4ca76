#include "runtime.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include "files.h"
#include "modes.h"

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
  if (path == kDefaultModel) {
    return resolve_resource(path, "the embedded model",
                            "It is installed with kvc (share/kvc/models/kjv-mini); give another "
                            "model folder with --model_name_or_path.")
        .string();
  }
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

std::vector<std::string> PolicyCatalog::all_modes() const {
  std::vector<std::string> modes;
  for (const Mode& m : known_modes())
    if (find(m.policy)) modes.push_back(m.name);
  for (const std::string& name : names())
    if (find_mode(name) == nullptr) modes.push_back(name);
  return modes;
}

std::string PolicyCatalog::errors() const { return kvc_policy_list_errors(list_.get()); }

nlohmann::ordered_json param_value_json(const kvc_param_value& v) {
  switch (v.type) {
    case KVC_PARAM_INT: return v.i;
    case KVC_PARAM_FLOAT: return v.f;
    case KVC_PARAM_BOOL: return v.i != 0;
    case KVC_PARAM_CHOICE: return v.n_strings > 0 ? v.strings[0] : "";
    case KVC_PARAM_INT_LIST: return std::vector<int64_t>(v.ints, v.ints + v.n_ints);
    case KVC_PARAM_STRING_LIST: return std::vector<std::string>(v.strings, v.strings + v.n_strings);
  }
  return nullptr;
}

nlohmann::ordered_json RunSpec::params_json() const {
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  const kvc_policy_info* info = kvc_policy_params_policy(params.get());
  for (size_t i = 0; info && i < info->n_params; ++i) {
    kvc_param_value v;
    kvc_param_value_init(&v);
    check(kvc_policy_params_get(params.get(), i, &v, nullptr), "reading policy parameters");
    config[info->params[i].name] = param_value_json(v);
  }
  return config;
}

namespace {

bool looks_like_path(const std::string& mode) {
  return mode.find('/') != std::string::npos ||
         (mode.size() > 3 && mode.compare(mode.size() - 3, 3, ".so") == 0);
}

// One source's value for a parameter: where it was given (for messages) and what.
struct Given {
  std::string origin;
  ParamValue value;
};

// The Option's value as a parameter value: integers stay typed, strings are text.
ParamValue param_value_of(const Option& o) {
  if (const auto* i = std::get_if<int64_t>(&o.value)) return *i;
  return to_text(o.value);
}

// Hands one value to the library, typed as given; a rejection names where it was given.
void set_param(kvc_policy_params* params, const std::string& name, const Given& given) {
  const char* n = name.c_str();
  const kvc_status status = std::visit(
      [&](const auto& v) -> kvc_status {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return kvc_policy_params_set_text(params, n, v.c_str());
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return kvc_policy_params_set_int(params, n, v);
        } else if constexpr (std::is_same_v<T, double>) {
          return kvc_policy_params_set_float(params, n, v);
        } else if constexpr (std::is_same_v<T, bool>) {
          return kvc_policy_params_set_bool(params, n, v ? 1 : 0);
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          return kvc_policy_params_set_ints(params, n, v.data(), v.size());
        } else {
          std::vector<const char*> items;
          for (const auto& item : v) items.push_back(item.c_str());
          return kvc_policy_params_set_strings(params, n, items.data(), items.size());
        }
      },
      given.value);
  if (status != KVC_OK) throw UsageError(given.origin + ": " + kvc_last_error());
}

}  // namespace

RunSpec make_run(const Options& options, const PolicyCatalog& catalog, const std::string& mode,
                 bool strict, std::vector<std::string>* warnings,
                 const std::vector<ParamOverride>& overrides) {
  RunSpec run;
  run.mode = mode;
  run.positions = options.get_string("policy", "positions") == "original"
                      ? KVC_POSITIONS_ORIGINAL
                      : KVC_POSITIONS_SHIFT;
  // ---- which plugin -----------------------------------------------------------------------
  const Mode* preset = nullptr;
  const kvc_policy_info* info = nullptr;
  std::string plugin;  // name or path handed to the library
  if (looks_like_path(mode)) {
    std::error_code ec;
    if (!fs::exists(mode, ec)) throw UsageError("--mode: policy file '" + mode + "' not found");
    plugin = mode;
  } else {
    preset = find_mode(mode);
    plugin = preset ? preset->policy : mode;
    info = catalog.find(plugin);
    if (!info) {
      std::vector<std::string> modes = catalog.all_modes();
      std::string hint = closest(mode, modes);
      std::string listed;
      for (const auto& n : modes) listed += (listed.empty() ? "" : ", ") + n;
      std::string message = "--mode: unknown policy '" + mode + "'" +
                            (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                            "; installed: " + (listed.empty() ? "none" : listed) + ", or all";
      std::string errors = catalog.errors();
      if (!errors.empty()) message += "\nplugins that failed to load:\n" + errors;
      throw UsageError(message);
    }
  }
  kvc_policy_params* created = nullptr;
  check(kvc_policy_params_create(plugin.c_str(),
                                 catalog.search_path().empty() ? nullptr
                                                               : catalog.search_path().c_str(),
                                 &created),
        "--mode '" + mode + "'");
  run.params.reset(created);
  info = kvc_policy_params_policy(created);
  run.policy = info->name;
  if (looks_like_path(mode)) run.mode = info->name;

  // ---- each parameter's value, by precedence ------------------------------------------------
  std::vector<std::string> schema;
  for (size_t i = 0; i < info->n_params; ++i) schema.emplace_back(info->params[i].name);
  auto has = [&](const std::string& name) {
    return std::find(schema.begin(), schema.end(), name) != schema.end();
  };
  std::map<std::string, std::vector<std::pair<Source, Given>>> sources;
  // [policy.<mode>] first: among the config's values, the mode's own win (the sort below
  // keeps this order within a source).
  for (const PolicyParam& p : options.mode_policy_params(mode)) {
    if (!has(p.name))
      throw UsageError(p.origin + ": policy '" + run.mode + "' has no parameter '" + p.name +
                       "'");
    sources[p.name].push_back({p.source, {p.origin, p.value}});
  }
  for (const auto& key : seed_policy_keys()) {
    const Option& o = options.get("policy", key);
    if (o.source == Source::Default || std::holds_alternative<std::monostate>(o.value)) continue;
    if (!has(key)) {
      if (strict && warnings)
        warnings->push_back("--" + key + " is ignored: policy '" + run.mode +
                            "' has no parameter '" + key + "'");
      continue;
    }
    if (preset) {
      const auto& ignored = preset->ignored_flags;
      const auto it = std::find_if(ignored.begin(), ignored.end(),
                                   [&](const auto& i) { return i.first == key; });
      if (it != ignored.end()) {
        if (strict && warnings && o.source == Source::CommandLine)
          warnings->push_back("--" + key + " is ignored by mode '" + run.mode + "': " +
                              it->second);
        continue;
      }
    }
    const std::string origin = o.source == Source::CommandLine
                                   ? "--" + o.flag + " " + to_text(o.value)
                                   : "[policy] " + key + " = " + to_text(o.value);
    sources[key].push_back({o.source, {origin, param_value_of(o)}});
  }
  for (const PolicyParam& p : options.extra_policy_params()) {
    if (!strict && !has(p.name)) continue;
    sources[p.name].push_back({p.source, {p.origin, p.value}});
  }
  if (preset)
    for (const auto& [name, text] : preset->presets)
      sources[name].push_back({Source::Default, {"mode '" + mode + "' (" + name + " = " + text +
                                                 ")", text}});
  for (const ParamOverride& o : overrides)
    sources[o.name] = {{Source::CommandLine, {o.origin, ParamValue(o.value)}}};
  for (auto& [name, given] : sources) {
    // The first command-line source wins over the config's and the preset; two command-line
    // sources for one parameter are a conflict.
    std::stable_sort(given.begin(), given.end(), [](const auto& a, const auto& b) {
      return static_cast<int>(a.first) > static_cast<int>(b.first);
    });
    if (given.size() > 1 && given[0].first == Source::CommandLine &&
        given[1].first == Source::CommandLine)
      throw UsageError("policy parameter '" + name + "' is given twice: by " +
                       given[0].second.origin + " and by " + given[1].second.origin);
    set_param(run.params.get(), name, given[0].second);
  }
  const kvc_status status = kvc_policy_params_check(run.params.get());
  if (status != KVC_OK) {
    throw UsageError("policy '" + run.mode + "' rejected its parameters: " +
                     kvc_status_name(status) + ": " + kvc_last_error());
  }
  return run;
}

void check_mode_tables(const Options& options, const PolicyCatalog& catalog) {
  const std::vector<std::string> known = catalog.all_modes();
  for (const auto& m : options.modes_with_params())
    if (std::find(known.begin(), known.end(), m) == known.end()) {
      const std::string hint = closest(m, known);
      throw UsageError("[policy." + m + "]: no mode '" + m + "' is installed" +
                       (hint.empty() ? "" : " (did you mean [policy." + hint + "]?)"));
    }
}

SessionPtr make_session(kvc_model* model, const RunSpec& run, int64_t max_entries) {
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy_params = run.params.get();
  so.positions = run.positions;
  so.max_entries = max_entries;
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

std::vector<int32_t> tokenize_text(const kvc_tokenizer* tokenizer, const std::string& text,
                                   const std::string& what) {
  // Byte-level BPE gives at most one id per byte; the first guess is usually enough.
  std::vector<int32_t> ids(text.size() / 2 + 16);
  size_t n = 0;
  kvc_status status =
      kvc_tokenize(tokenizer, text.data(), text.size(), ids.data(), ids.size(), &n);
  if (status == KVC_ERR_BUFFER_TOO_SMALL) {
    ids.resize(n);
    status = kvc_tokenize(tokenizer, text.data(), text.size(), ids.data(), ids.size(), &n);
  }
  check(status, "tokenizing " + what);
  ids.resize(n);
  return ids;
}

nlohmann::ordered_json policy_report(const kvc_session* session) {
  size_t length = 0;
  kvc_session_policy_report(session, nullptr, 0, &length);  // asks for the length
  std::string text(length + 1, '\0');
  check(kvc_session_policy_report(session, text.data(), text.size(), &length),
        "reading the policy report");
  text.resize(length);
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw RunError(std::string("the policy report is not valid JSON: ") + e.what());
  }
}

std::string variant_summary(const nlohmann::ordered_json& report, const RunSpec& run) {
  auto text = [](const nlohmann::ordered_json& v) {
    return v.is_string() ? v.get<std::string>() : v.dump();
  };
  std::string out = text(report.value("policy", nlohmann::ordered_json(run.policy)));
  if (report.contains("version")) out += " " + text(report["version"]);
  out += ": ";
  const std::string kind = report.value("kind", "");
  if (kind == "full cache") {
    out += "full cache";
  } else if (report.contains("rule")) {
    const auto& r = report["rule"];
    std::vector<std::string> parts;
    auto size = [&](const char* key, const std::string& name) {
      if (r.value(key, int64_t{0}) > 0) parts.push_back(name + " " + text(r[key]));
    };
    size("sink_size", "sinks");
    size("recent_size", "recent");
    if (r.value("separator_size", int64_t{0}) > 0)
      parts.push_back("separators " + text(r["separator_size"]) + " (of " +
                      std::to_string(r.value("separator_ids", nlohmann::ordered_json::array())
                                         .size()) +
                      " ids)");
    if (!r.value("heavy_signal", nlohmann::ordered_json()).is_null()) {
      std::string heavy = "heavy " + (r.contains("layer_heavy_sizes")
                                          ? "per layer " + text(r["layer_heavy_sizes"])
                                          : text(r["heavy_size"]));
      heavy += " by " + std::string(r.value("heavy_order", "") == "smallest" ? "lowest " : "") +
               text(r["heavy_signal"]) + " (" + text(r["scope"]);
      if (r.contains("score_layers")) heavy += " of layers " + text(r["score_layers"]);
      heavy += ", " + text(r["allocation"]) + " allocation";
      if (r.value("update_interval", int64_t{1}) > 1)
        heavy += ", refreshed every " + text(r["update_interval"]) + " steps";
      heavy += ")";
      parts.push_back(heavy);
    }
    for (size_t i = 0; i < parts.size(); ++i) out += (i ? " + " : "") + parts[i];
    if (report.value("trigger", "") == "over_capacity" &&
        report.value("trigger_size", int64_t{0}) > report.value("capacity", int64_t{0}))
      out += ", cut back when over " + text(report["trigger_size"]);
  } else {
    out += "callback policy (signals " + text(report.value("signals", nlohmann::ordered_json())) +
           ")";
  }
  out += std::string("; positions ") + run.positions_name();
  return out;
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
  for (const Mode& m : known_modes()) {
    if (m.presets.empty() || !catalog.find(m.policy)) continue;
    out << m.name << " (mode)  " << m.description << "\n    policy: " << m.policy
        << ", presets:";
    for (const auto& [name, value] : m.presets) out << " " << name << "=" << value;
    out << "\n";
  }
  std::string errors = catalog.errors();
  if (!errors.empty()) out << "plugins that failed to load:\n" << errors << "\n";
  return out.str();
}

}  // namespace kvc::hosts
