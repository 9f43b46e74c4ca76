// The policy host: finds, validates and runs eviction-policy plugins (kvc/policy.h).
//
// Loading: a plugin is named ("h2o" -> libkvc_policy_h2o.so along the search path) or given by
// path. Every plugin is validated once (ABI major, entry symbol, descriptor, schema) and kept
// loaded for the life of the process, so descriptors and strings never dangle.
// Running: a PolicyInstance wraps one plugin instance of one session: it parses the text
// parameters against the schema, calls create, checks the setup, and turns every decision
// (a rule run by the engine, or the plugin's decide callback) into a validated plan.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvc/kvc.h"
#include "kvc/policy.h"

namespace kvc {

// A validated plugin. Never unloaded (the process-wide cache holds it), so `desc` and every
// string it points to stay valid.
struct LoadedPolicy {
  std::string path;                        // canonical path of the .so
  const kvc_policy_descriptor* desc = nullptr;
  std::string name;                        // desc->name
  std::vector<kvc_param_info> params;      // the schema, copied with NULL help/choices as ""
  std::shared_ptr<void> library;           // the boost::dll::shared_library, type-erased
  // "policy 'h2o' (/path/libkvc_policy_h2o.so)": the prefix of every message about it.
  std::string label() const;
};

// Folders searched for libkvc_policy_<name>.so, in order, duplicates removed: `extra`
// (':'-separated), $KVC_POLICY_PATH (':'-separated), the install dir (KVC_INSTALL_POLICY_DIR),
// <folder of the binary holding libkvc>/kvc/policies and that folder itself.
std::vector<std::string> policy_search_path(const std::string& extra);

// Loads by name ([a-z0-9_]+, resolved along the search path) or by path (anything containing
// '/' or ending in ".so"). Throws kvc::Error: KVC_ERR_NOT_FOUND (unknown name, listing the
// names available and the folders searched; missing file), KVC_ERR_INVALID_ARGUMENT (malformed
// name), KVC_ERR_POLICY (the file is not a valid plugin; the message says why).
std::shared_ptr<const LoadedPolicy> load_policy(const std::string& name_or_path,
                                                const std::string& extra_path);

// Every valid plugin on the search path, sorted by name; a name found in several folders is
// taken from the first (like PATH). Invalid candidates are skipped, with one line each
// ("<file>: <why>") appended to *errors when errors is not NULL.
std::vector<std::shared_ptr<const LoadedPolicy>> discover_policies(const std::string& extra_path,
                                                                   std::string* errors);

// Text parameters parsed against a schema, defaults filled in. Owns the storage the
// kvc_policy_value pointers refer to (not copyable: the values point into it).
// Throws KVC_ERR_INVALID_ARGUMENT for an unknown name (listing the valid ones), a duplicate,
// a value of the wrong type, out of range (naming the range), or not among the choices.
class ParsedParams {
 public:
  ParsedParams(const LoadedPolicy& policy, const kvc_param* params, size_t n_params);
  // Same, straight from a descriptor (its schema is read with the stride of params[0]).
  ParsedParams(const kvc_policy_descriptor& desc, const kvc_param* params, size_t n_params);
  ParsedParams(const kvc_param_info* schema, size_t n_schema, const kvc_param* params,
               size_t n_params, const std::string& label);
  ParsedParams(const ParsedParams&) = delete;
  ParsedParams& operator=(const ParsedParams&) = delete;

  const kvc_policy_value* values() const { return values_.data(); }
  size_t size() const { return values_.size(); }
  // The text each value was parsed from (the default or the caller's).
  const std::string& text(size_t i) const { return slots_[i].text; }

  // Parses one value; `where` prefixes error messages. Used for schema defaults too.
  static void check_value(const kvc_param_info& info, const std::string& text,
                          const std::string& where);

 private:
  struct Slot {
    std::string text;
    std::vector<int64_t> ints;
    std::vector<std::string> strings;
    std::vector<const char*> cstrs;
  };
  void init(const kvc_param_info* schema, size_t n_schema, const kvc_param* params,
            size_t n_params, const std::string& label);
  std::vector<Slot> slots_;
  std::vector<kvc_policy_value> values_;
};

// One plugin instance of one session. Not copyable or movable (the plugin's host points at it).
class PolicyInstance {
 public:
  // Parses `params`, calls create and validates the setup (trigger and scope known, sizes and
  // capacity sane, the rule's heavy signal requested, score layers within the model, capacity
  // at least the rule's largest keep count, decide present when needed). `host` provides the
  // model's dimensions (0 = no model, e.g. when only checking a configuration) and tokenize;
  // its set_error is not used: errors raised by the plugin become the kvc::Error thrown here.
  // Throws KVC_ERR_INVALID_ARGUMENT (bad parameters, or create refused them) or
  // KVC_ERR_POLICY (the plugin returned an unusable setup).
  PolicyInstance(std::shared_ptr<const LoadedPolicy> policy, const kvc_policy_host& host,
                 const kvc_param* params, size_t n_params);
  ~PolicyInstance();
  PolicyInstance(const PolicyInstance&) = delete;
  PolicyInstance& operator=(const PolicyInstance&) = delete;

  const kvc_policy_setup& setup() const { return setup_; }
  const LoadedPolicy& policy() const { return *policy_; }
  const ParsedParams& params() const { return *params_; }

  // Forgets per-text state (calls the plugin's reset when it has one).
  void reset();

  // Fills `plan` (engine buffers; kind preset to KVC_PLAN_NOTHING, stride >= the largest
  // n_entries) by running the rule or calling decide, then validates it. Throws KVC_ERR_POLICY
  // naming the plugin and the defect; the cache must then be left as it is.
  void decide(const kvc_cache_view& view, kvc_plan& plan);

 private:
  static int64_t tokenize_trampoline(void* self, const char* text, int32_t* ids, size_t cap);
  static void set_error_trampoline(void* self, const char* message);
  std::string take_error(const char* fallback);

  std::shared_ptr<const LoadedPolicy> policy_;
  kvc_policy_host outer_{};  // the engine's services
  kvc_policy_host host_{};   // what the plugin sees: outer_ with our own set_error
  std::unique_ptr<ParsedParams> params_;
  kvc_policy_setup setup_{};
  void* instance_ = nullptr;
  std::string error_;
};

// Runs a rule (kvc/policy.h) over a view. Heads with at most `skip_at_or_below` entries are
// left whole (pass the setup's trigger_size for OVER_CAPACITY; -1 runs the rule everywhere).
// Writes a KEEP plan (shared for KVC_SCOPE_SHARED, whose heads must hold the same entries), or
// leaves NOTHING when no entry is evicted. Signals are summed in double; top-k ties go to the
// older entry.
void execute_rule(const kvc_rule& rule, const kvc_cache_view& view, kvc_plan& plan,
                  int64_t skip_at_or_below = -1);

// Throws KVC_ERR_POLICY naming `policy_label` and the defect unless: the kind is known; every
// list has strictly increasing ranks in [0, n_entries) and fits the stride; a shared plan's
// heads hold identical entries; and (capacity >= 0) no head keeps more than `capacity`.
void validate_plan(const kvc_plan& plan, const kvc_cache_view& view, int64_t capacity,
                   const std::string& policy_label);

}  // namespace kvc
