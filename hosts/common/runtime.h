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

// The model path of the settings, with the embedded default resolved against the source tree
// or the install prefix (see resolve_resource).
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
  // names() with the seed's methods first, in the seed's order, then the others by name.
  std::vector<std::string> ordered_names() const;
  std::string errors() const;
  const std::string& search_path() const { return search_path_; }

 private:
  PolicyListPtr list_;
  std::string search_path_;
};

// One policy run: what the engine gets and how results are labelled.
struct RunSpec {
  std::string mode;    // label for files and tables ("streaming", "lazy_unified", ...)
  std::string policy;  // name or .so path given to the engine
  std::vector<std::pair<std::string, std::string>> params;
  kvc_position_mode positions = KVC_POSITIONS_SHIFT;
  std::string search_path;
  std::vector<std::string> schema;         // parameter names the policy declares
  std::vector<kvc_param_type> schema_types;  // and their types

  // The parameters as a JSON object typed by the policy's schema (the seed's "config").
  nlohmann::ordered_json params_json() const;
  const char* positions_name() const {
    return positions == KVC_POSITIONS_SHIFT ? "shift" : "original";
  }
};

// Builds the run of one mode. The seed's size flags are passed to the policy parameters of the
// same name when its schema has them (an explicitly set flag the policy lacks gets a warning
// when `strict`); other [policy] keys and --param pairs are passed as given when `strict`, and
// only where the schema has them otherwise (--mode all). Validated with kvc_policy_check:
// a rejected parameter is a UsageError naming it.
RunSpec make_run(const Options& options, const PolicyCatalog& catalog, const std::string& mode,
                 bool strict, std::vector<std::string>* warnings);

// Creates a session of `run`; max_entries 0 = the engine's default.
SessionPtr make_session(kvc_model* model, const RunSpec& run, int64_t max_entries);

kvc_cache_stats cache_stats(const kvc_session* session);

// "name  version  description\n    param (type, default) help" for --list_policies.
std::string describe_policies(const PolicyCatalog& catalog);

// Handles --list_policies for both programs: when it is among the arguments, parses the others
// (for --policy_path / --config), prints the installed policies and returns true.
bool list_policies_if_asked(Options& options, int argc, char** argv);

// A parameter value in the kvc_param text syntax as JSON (numbers, booleans, else strings).
nlohmann::ordered_json param_value_json(const std::string& text);

}  // namespace kvc::hosts
