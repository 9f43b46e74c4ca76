// The host programs' view of libkvc: RAII handles over the public C ABI (kvc/kvc.h only),
// model loading from the settings, and the resolution of --mode into policy runs.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvc/kvc.h"
#include "options.h"
#include "schema.h"

namespace kvc::hosts {

// Throws RunError("<what>: <status name>: <kvc_last_error()>") unless status is KVC_OK.
void check(kvc_status status, const std::string& what);

struct ModelFree {
  void operator()(kvc_model* m) const { kvc_model_free(m); }
};
struct SessionFree {
  void operator()(kvc_session* s) const { kvc_session_free(s); }
};
struct PolicyListFree {
  void operator()(kvc_policy_list* l) const { kvc_policy_list_free(l); }
};
struct TokenizerFree {
  void operator()(kvc_tokenizer* t) const { kvc_tokenizer_free(t); }
};
using ModelPtr = std::unique_ptr<kvc_model, ModelFree>;
using SessionPtr = std::unique_ptr<kvc_session, SessionFree>;
using PolicyListPtr = std::unique_ptr<kvc_policy_list, PolicyListFree>;
using TokenizerPtr = std::unique_ptr<kvc_tokenizer, TokenizerFree>;

struct LoadedModel {
  ModelPtr model;
  kvc_model_info info{};
  std::string path;  // as resolved
  nlohmann::ordered_json describe() const;
};

// The model path of the settings, with the embedded default looked up in the working
// directory, the user's data folder, the install prefix and the source tree (resolve_resource,
// which names every place looked at when none holds it).
std::string model_path(const Options& options);

// Loads [model] path with backend, dtype, threads and `seed` (weights of synthetic: models).
// A missing folder is reported before the engine is asked, naming the path.
LoadedModel load_model(const Options& options, uint64_t seed);

const char* backend_name(kvc_backend backend);
const char* dtype_name(kvc_dtype dtype);

// Every policy plugin found on the search path ([policy] search_path, then the engine's).
class PolicyCatalog {
 public:
  explicit PolicyCatalog(const std::string& search_path);
  const kvc_policy_info* find(const std::string& name) const;
  // The policy loaded from `path` (a .so), or nullptr.
  const kvc_policy_info* find_path(const std::string& path) const;
  std::vector<std::string> names() const;
  // The modes of --mode all: the table's modes whose policy is installed, in the table's
  // order (the seed's), then the other installed policies by name.
  std::vector<std::string> all_modes() const;
  std::string errors() const;
  const std::string& search_path() const { return search_path_; }

 private:
  PolicyListPtr list_;
  std::string search_path_;
};

struct PolicyParamsFree {
  void operator()(kvc_policy_params* p) const { kvc_policy_params_free(p); }
};
using PolicyParamsPtr = std::unique_ptr<kvc_policy_params, PolicyParamsFree>;

// One policy run: the policy with its typed parameters (resolved once, defaults included),
// and how results are labelled.
struct RunSpec {
  std::string mode;    // label for files and tables ("streaming", "lazy_unified", ...)
  std::string policy;  // the plugin's name
  PolicyParamsPtr params;
  kvc_position_mode positions = KVC_POSITIONS_SHIFT;

  // Every parameter of the policy, typed as its schema declares (the seed's "config").
  nlohmann::ordered_json params_json() const;
  const char* positions_name() const {
    return positions == KVC_POSITIONS_SHIFT ? "shift" : "original";
  }
};

// Builds the run of one mode (an installed policy, a mode of the table in modes.h, or a path to
// a .so). Each policy parameter is taken from, in order: a command-line flag (the seed's size
// flags map onto parameters of the same name), `--param`, the config's [policy] table, the
// mode's presets; otherwise the policy's own default. A flag and a --param for the same
// parameter are an error naming both. With `strict` (one mode), an explicitly given seed flag
// the policy lacks is a warning and an unknown --param an error; for --mode all both are only
// applied where the schema has them. Validated with kvc_policy_params_check: a rejected value
// is a UsageError naming where it was given.
// `overrides` (a budget sweep's scaled sizes) replace every other source of their parameters.
struct ParamOverride {
  std::string name;
  int64_t value;
  std::string origin;  // for messages: "--budgets 128"
};
RunSpec make_run(const Options& options, const PolicyCatalog& catalog, const std::string& mode,
                 bool strict, std::vector<std::string>* warnings,
                 const std::vector<ParamOverride>& overrides = {});

// Every [policy.<mode>] table of the config names an installed mode (a typo would silently not
// apply); UsageError otherwise.
void check_mode_tables(const Options& options, const PolicyCatalog& catalog);

// Creates a session of `run`; max_entries 0 = the engine's default.
SessionPtr make_session(kvc_model* model, const RunSpec& run, int64_t max_entries);

kvc_cache_stats cache_stats(const kvc_session* session);

// `text` as token ids (no special tokens); RunError naming `what` on failure.
std::vector<int32_t> tokenize_text(const kvc_tokenizer* tokenizer, const std::string& text,
                                   const std::string& what);

// kvc_session_policy_report as JSON: the policy exactly as the session runs it.
nlohmann::ordered_json policy_report(const kvc_session* session);

// One line saying which variant runs, from the policy report: "h2o 1.1.0: sinks 4 + recent 252
// + heavy 128 by acc_attention (per_head, uniform allocation); positions shift". Both programs
// print it on stderr when a run starts, and results record the report it is made from.
std::string variant_summary(const nlohmann::ordered_json& report, const RunSpec& run);

// "name  version  description\n    param (type, default) help" for --list_policies, with the
// modes of modes.h that are presets of an installed policy.
std::string describe_policies(const PolicyCatalog& catalog);

// A typed parameter value as JSON: numbers, booleans, choices as strings, lists as arrays.
nlohmann::ordered_json param_value_json(const kvc_param_value& value);

}  // namespace kvc::hosts
