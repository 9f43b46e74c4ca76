// Finding and validating policy plugins (through PluginLibrary), with a process-wide cache.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "common/error.h"
#include "policy/policy.h"

namespace fs = std::filesystem;

namespace kvc {

namespace {

constexpr const char* kPrefix = "libkvc_policy_";
constexpr const char* kSuffix = ".so";

std::vector<std::string> split_colon(const std::string& s) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, ':'))
    if (!item.empty()) out.push_back(item);
  return out;
}

bool is_policy_name(const char* s) {
  if (s == nullptr || *s == '\0') return false;
  for (; *s; ++s)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
  return true;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// (name, path) of every libkvc_policy_<name>.so in `dir`, sorted by name.
std::vector<std::pair<std::string, std::string>> candidates_in(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string file = it->path().filename().string();
    if (file.rfind(kPrefix, 0) != 0 || !ends_with(file, kSuffix)) continue;
    std::string name =
        file.substr(std::strlen(kPrefix), file.size() - std::strlen(kPrefix) - strlen(kSuffix));
    std::error_code ec2;
    if (name.empty() || fs::is_directory(it->path(), ec2)) continue;
    out.emplace_back(name, it->path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The schema as the plugin laid it out: the stride is params[0].struct_size, so a plugin built
// against a newer header (larger kvc_param_info) still reads correctly.
std::vector<kvc_param_info> copy_schema(const kvc_policy_descriptor& d, const std::string& where) {
  std::vector<kvc_param_info> out;
  if (d.n_params == 0) return out;
  require(d.params != nullptr, KVC_ERR_POLICY,
          where + ": the descriptor declares " + std::to_string(d.n_params) +
              " parameters but 'params' is NULL");
  require(d.n_params <= 4096, KVC_ERR_POLICY,
          where + ": implausible parameter count " + std::to_string(d.n_params));
  const size_t stride = d.params[0].struct_size;
  require(stride >= sizeof(kvc_param_info) && stride <= 4096, KVC_ERR_POLICY,
          where + ": parameter 0 has struct_size " + std::to_string(stride) +
              " (expected at least " + std::to_string(sizeof(kvc_param_info)) + ")");
  const auto* base = reinterpret_cast<const unsigned char*>(d.params);
  for (size_t i = 0; i < d.n_params; ++i) {
    kvc_param_info p;
    std::memcpy(&p, base + i * stride, sizeof p);
    require(p.struct_size == stride, KVC_ERR_POLICY,
            where + ": parameter " + std::to_string(i) + " has struct_size " +
                std::to_string(p.struct_size) + ", parameter 0 has " + std::to_string(stride) +
                " (all entries of the schema must have the same size)");
    p.struct_size = sizeof(kvc_param_info);
    out.push_back(p);
  }
  return out;
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void validate_schema(std::vector<kvc_param_info>& params, const std::string& where) {
  std::set<std::string> seen;
  for (size_t i = 0; i < params.size(); ++i) {
    kvc_param_info& p = params[i];
    const std::string at = where + ": parameter " + std::to_string(i);
    require(p.name != nullptr && *p.name != '\0', KVC_ERR_POLICY, at + " has no name");
    for (const char* c = p.name; *c; ++c)
      require(std::isalnum(static_cast<unsigned char>(*c)) || *c == '_' || *c == '-' ||
                  *c == '.',
              KVC_ERR_POLICY,
              at + " has the name '" + p.name + "' (allowed: letters, digits, '_', '-', '.')");
    const std::string pat = where + ": parameter '" + std::string(p.name) + "'";
    require(seen.insert(p.name).second, KVC_ERR_POLICY, pat + " is declared twice");
    // A C plugin may store any int in the enum; loading an out-of-range enum is UB in C++.
    int32_t type = 0;
    static_assert(sizeof p.type == sizeof type);
    std::memcpy(&type, &p.type, sizeof type);
    require(type >= KVC_PARAM_INT && type <= KVC_PARAM_STRING_LIST, KVC_ERR_POLICY,
            pat + " has the unknown type " + std::to_string(type) +
                " (expected a kvc_param_type)");
    require(p.default_value != nullptr, KVC_ERR_POLICY, pat + " has no default value");
    const bool ranged =
        p.type == KVC_PARAM_INT || p.type == KVC_PARAM_FLOAT || p.type == KVC_PARAM_INT_LIST;
    if (ranged)
      require(!(p.min_value > p.max_value) && p.min_value == p.min_value &&
                  p.max_value == p.max_value,
              KVC_ERR_POLICY,
              pat + " has an empty range [" + num(p.min_value) + ", " + num(p.max_value) +
                  "] (min must not exceed max)");
    if (p.type == KVC_PARAM_CHOICE) {
      require(p.choices != nullptr && *p.choices != '\0', KVC_ERR_POLICY,
              pat + " is a choice but lists no choices");
      const std::string c = p.choices;
      require(c.front() != '|' && c.back() != '|' && c.find("||") == std::string::npos,
              KVC_ERR_POLICY, pat + " has an empty item in its choices '" + c + "'");
    }
    if (p.help == nullptr) p.help = "";
    if (p.choices == nullptr) p.choices = "";
    try {
      PolicyParams::check_text(p, p.default_value, pat + ": default");
    } catch (const Error& e) {
      fail(KVC_ERR_POLICY, std::string(e.what()) + " (the plugin's schema is invalid)");
    }
  }
}

std::shared_ptr<LoadedPolicy> open_plugin(const std::string& path) {
  PluginLibrary lib = PluginLibrary::open(path, "policy plugin", KVC_ERR_POLICY);
  const auto entry = lib.function<const kvc_policy_descriptor*(uint32_t, uint32_t)>(
      KVC_POLICY_ENTRY_SYMBOL);
  const std::string where = "policy plugin '" + path + "'";
  const kvc_policy_descriptor* d = nullptr;
  try {
    d = entry(KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR);
  } catch (...) {
    fail(KVC_ERR_POLICY, where + ": " + KVC_POLICY_ENTRY_SYMBOL + "() failed: an exception "
                         "escaped the plugin (exceptions must not cross the C ABI)");
  }
  require(d != nullptr, KVC_ERR_POLICY,
          where + ": " + KVC_POLICY_ENTRY_SYMBOL + "() returned NULL (the plugin declined host "
                  "ABI " + std::to_string(KVC_POLICY_ABI_MAJOR) + "." +
                  std::to_string(KVC_POLICY_ABI_MINOR) + ")");
  // Check the version before reading anything else: other majors may lay fields out otherwise.
  require(d->struct_size >= offsetof(kvc_policy_descriptor, abi_minor) + sizeof(uint32_t),
          KVC_ERR_POLICY,
          where + ": descriptor struct_size " + std::to_string(d->struct_size) + " is too small");
  lib.require_version("policy ABI major", d->abi_major, KVC_POLICY_ABI_MAJOR);
  const size_t min_size = offsetof(kvc_policy_descriptor, get_extension);
  require(d->struct_size >= min_size && d->struct_size <= 65536, KVC_ERR_POLICY,
          where + ": descriptor struct_size " + std::to_string(d->struct_size) +
              " is implausible (expected at least " + std::to_string(min_size) + ")");
  require(is_policy_name(d->name), KVC_ERR_POLICY,
          where + ": descriptor name '" + std::string(d->name ? d->name : "(NULL)") +
              "' is invalid (expected [a-z0-9_]+)");
  const std::string named = "policy plugin '" + std::string(d->name) + "' (" + path + ")";
  require(d->version != nullptr, KVC_ERR_POLICY, named + ": descriptor version is NULL");
  require(d->description != nullptr, KVC_ERR_POLICY, named + ": descriptor description is NULL");
  require(d->create != nullptr, KVC_ERR_POLICY, named + ": descriptor create is NULL");
  require(d->destroy != nullptr, KVC_ERR_POLICY, named + ": descriptor destroy is NULL");

  auto out = std::make_shared<LoadedPolicy>();
  out->path = path;
  out->desc = d;
  out->name = d->name;
  out->params = copy_schema(*d, named);
  validate_schema(out->params, named);
  out->library = std::move(lib);
  return out;
}

std::mutex g_mutex;
// Canonical path -> validated plugin. Plugins are never unloaded: sessions and listings may
// hold pointers into them, and unloading C++ code with static state is fragile.
std::map<std::string, std::shared_ptr<const LoadedPolicy>>& cache() {
  static auto* c = new std::map<std::string, std::shared_ptr<const LoadedPolicy>>();
  return *c;
}

// Loads (or finds in the cache) the plugin file at `path`; checks its name when looked up by
// name.
std::shared_ptr<const LoadedPolicy> load_file(const std::string& path,
                                              const std::string& expected_name) {
  std::error_code ec;
  const fs::path canon = fs::canonical(path, ec);
  require(!ec, KVC_ERR_NOT_FOUND, "policy plugin file '" + path + "' does not exist");
  require(!fs::is_directory(canon, ec), KVC_ERR_POLICY,
          "'" + path + "' is a folder, not a policy plugin");
  std::shared_ptr<const LoadedPolicy> p;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = cache().find(canon.string());
    if (it != cache().end()) {
      p = it->second;
    } else {
      p = open_plugin(canon.string());
      cache().emplace(canon.string(), p);
    }
  }
  require(expected_name.empty() || p->name == expected_name, KVC_ERR_POLICY,
          "policy plugin '" + p->path + "' calls itself '" + p->name + "', but was looked up as '" +
              expected_name + "' (the descriptor name must match libkvc_policy_<name>.so)");
  return p;
}

}  // namespace

std::string LoadedPolicy::label() const { return "policy '" + name + "' (" + path + ")"; }

std::unique_ptr<PolicyParams> LoadedPolicy::make_params() const {
  return std::make_unique<PolicyParams>(params, label());
}

std::vector<std::string> policy_search_path(const std::string& extra) {
  std::vector<std::string> dirs = split_colon(extra);
  if (const char* env = std::getenv("KVC_POLICY_PATH")) {
    for (auto& d : split_colon(env)) dirs.push_back(d);
  }
#ifdef KVC_INSTALL_POLICY_DIR
  dirs.push_back(KVC_INSTALL_POLICY_DIR);
#endif
  const std::string own = folder_of_libkvc();
  if (!own.empty()) {
    dirs.push_back(own + "/kvc/policies");
    dirs.push_back(own);
  }
  std::vector<std::string> out;
  for (auto& d : dirs)
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
  return out;
}

std::shared_ptr<const LoadedPolicy> load_policy(const std::string& name_or_path,
                                                const std::string& extra_path) {
  require(!name_or_path.empty(), KVC_ERR_INVALID_ARGUMENT, "the policy name is empty");
  if (name_or_path.find('/') != std::string::npos || ends_with(name_or_path, kSuffix))
    return load_file(name_or_path, "");
  require(is_policy_name(name_or_path.c_str()), KVC_ERR_INVALID_ARGUMENT,
          "'" + name_or_path + "' is not a policy name ([a-z0-9_]+) or a path to a .so file");
  const std::vector<std::string> dirs = policy_search_path(extra_path);
  const std::string file = kPrefix + name_or_path + kSuffix;
  for (const auto& d : dirs) {
    std::error_code ec;
    const fs::path p = fs::path(d) / file;
    if (fs::exists(p, ec) && !fs::is_directory(p, ec)) return load_file(p.string(), name_or_path);
  }
  std::set<std::string> names;
  for (const auto& d : dirs)
    for (auto& c : candidates_in(d)) names.insert(c.first);
  fail(KVC_ERR_NOT_FOUND,
       "unknown policy '" + name_or_path + "': no " + file + " found. Available policies: " +
           (names.empty() ? std::string("(none)")
                          : join(std::vector<std::string>(names.begin(), names.end()), ", ")) +
           ". Folders searched: " + (dirs.empty() ? std::string("(none)") : join(dirs, ":")) +
           " (add folders with the policy path option or KVC_POLICY_PATH)");
}

std::vector<std::shared_ptr<const LoadedPolicy>> discover_policies(const std::string& extra_path,
                                                                   std::string* errors) {
  std::vector<std::shared_ptr<const LoadedPolicy>> out;
  std::set<std::string> taken;
  for (const auto& d : policy_search_path(extra_path)) {
    for (const auto& [name, path] : candidates_in(d)) {
      if (!taken.insert(name).second) continue;  // shadowed by an earlier folder
      try {
        out.push_back(load_file(path, name));
      } catch (const Error& e) {
        if (errors) *errors += (errors->empty() ? "" : "\n") + std::string(e.what());
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->name < b->name; });
  return out;
}

}  // namespace kvc
