// The policy host: finds, validates and runs eviction-policy plugins (kvc/policy.h).
//
//   parameters (PolicyParams, typed)  ->  create (the plugin)  ->  setup: a rule or a callback
//        ->  each step: count, trigger?  ->  RuleEngine::decide or the plugin's decide
//        ->  validate_plan  ->  the session applies the plan to its cache
//
// Loading: a plugin is named ("h2o" -> libkvc_policy_h2o.so along the search path) or given by
// path. Every plugin is validated once (ELF, entry symbol, ABI major, descriptor, schema) and
// kept loaded for the life of the process, so descriptors and strings never dangle.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/plugin_library.h"
#include "kvc/kvc.h"
#include "kvc/policy.h"
#include "policy/params.h"
#include "policy/rule_engine.h"

namespace kvc {

class Tokenizer;

// "acc_attention", "last_attention", ... for one KVC_SIGNAL_* flag.
const char* signal_name(uint32_t flag);

// A validated plugin. Never unloaded (the process-wide cache holds it), so `desc` and every
// string it points to stay valid.
struct LoadedPolicy {
  std::string path;                        // canonical path of the .so
  const kvc_policy_descriptor* desc = nullptr;
  std::string name;                        // desc->name
  std::vector<kvc_param_info> params;      // the schema, copied with NULL help/choices as ""
  PluginLibrary library;
  // "policy 'h2o' (/path/libkvc_policy_h2o.so)": the prefix of every message about it.
  std::string label() const;
  // A fresh parameter set at the schema's defaults.
  std::unique_ptr<PolicyParams> make_params() const;
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

// One plugin instance of one session. Not copyable or movable (the plugin's host points at it).
class PolicyInstance {
 public:
  // Calls create with `params` and validates the setup (trigger and scope known, sizes and
  // capacity sane, the rule's signals requested, score layers within the model, capacity at
  // least the rule's largest keep count, decide present when needed). `host` provides the
  // model's dimensions (0 = no model, e.g. when only checking a configuration) and tokenize;
  // its set_error is not used: errors raised by the plugin become the kvc::Error thrown here.
  // Throws KVC_ERR_INVALID_ARGUMENT (create refused its parameters) or KVC_ERR_POLICY (the
  // plugin failed or returned an unusable setup); both name the plugin file and "create".
  PolicyInstance(std::shared_ptr<const LoadedPolicy> policy, const kvc_policy_host& host,
                 const PolicyParams& params);
  // The same from text parameters (the kvc_param interface).
  PolicyInstance(std::shared_ptr<const LoadedPolicy> policy, const kvc_policy_host& host,
                 const kvc_param* params, size_t n_params);
  ~PolicyInstance();
  PolicyInstance(const PolicyInstance&) = delete;
  PolicyInstance& operator=(const PolicyInstance&) = delete;

  const kvc_policy_setup& setup() const { return setup_; }
  const LoadedPolicy& policy() const { return *policy_; }
  // The engine's executor of the setup's rule; null for a callback policy.
  RuleEngine* rule() { return rule_ ? &*rule_ : nullptr; }

  // The notes the plugin left through host->note while it was created.
  const std::vector<std::string>& notes() const { return notes_; }
  // kvc_session_policy_report's JSON: the plugin, `params` (the values it was created with),
  // its setup and rule (separators decoded with `tokenizer` when there is one), the notes.
  std::string report(const PolicyParams& params, const Tokenizer* tokenizer) const;
  // The signal the policy ranks by: the rule's heavy signal, else the first one it asked
  // for; 0 when none.
  uint32_t ranking_signal() const;

  // Forgets per-text state (the rule's, and the plugin's through its reset).
  void reset();
  // Step 2 of the step order: counts the step (every step, also when nothing is evicted).
  void count_step();
  // Steps counted since create or reset.
  int64_t steps() const { return steps_; }
  // Whether step 3 runs now, given the entries of every (layer, head) (row-major counts).
  bool triggered(const int64_t* counts, int32_t n_layers, int32_t n_heads) const;
  // How a block of steps can run layer by layer (exact block scoring) under this policy:
  //   None       nothing is ever evicted: a block is a plain causal prefill;
  //   PerLayer   after each query in each layer, that layer's decision (decide_layer);
  //   LayerZero  after each query in layer 0, one decision replayed on every later layer;
  //   No         token by token only; *why (if given) says why.
  enum class Layerwise { None, PerLayer, LayerZero, No };
  Layerwise layerwise(std::string* why) const;
  // Whether the decision of `layer` runs now, given the entries of every (layer, head).
  bool layer_triggered(int32_t layer, const int64_t* counts, int32_t n_heads) const;
  // The decision of one layer at the count `step` (PerLayer; LayerZero: layer 0, a shared
  // plan), from `view` whose heads of `layer` are up to date (KvCache::make_layer_view).
  // Writes only that layer's lists; validated as decide(). Returns whether anything leaves.
  bool decide_layer(int32_t layer, int64_t step, const kvc_cache_view& view, kvc_plan& plan);

  // Step 3: fills `plan` (engine buffers; stride >= the largest n_entries) by running the rule
  // or calling decide, then validates it. Throws KVC_ERR_POLICY naming the plugin, the
  // callback and the defect; the plan is then NOTHING and must not be applied.
  void decide(const kvc_cache_view& view, kvc_plan& plan);

 private:
  void create(const PolicyParams& params);
  static int64_t tokenize_trampoline(void* self, const char* text, int32_t* ids, size_t cap);
  static void set_error_trampoline(void* self, const char* message);
  static void note_trampoline(void* self, const char* message);
  // Calls one plugin callback: a nonzero return or an escaped C++ exception becomes a
  // kvc::Error(status) "<label>: <callback> failed: <message>".
  template <class F>
  void call(const char* callback, kvc_status status, F&& f);

  std::shared_ptr<const LoadedPolicy> policy_;
  kvc_policy_host outer_{};  // the engine's services
  kvc_policy_host host_{};   // what the plugin sees: outer_ with our own set_error
  kvc_policy_setup setup_{};
  std::optional<RuleEngine> rule_;
  bool layer_local_callback_ = false;  // the plugin returned KVC_EXTENSION_LAYER_LOCAL
  int64_t steps_ = 0;
  void* instance_ = nullptr;
  std::string error_;
  std::vector<std::string> notes_;
};

// Throws KVC_ERR_POLICY naming `policy_label` and the defect unless: the kind is known; every
// list has strictly increasing ranks in [0, n_entries) and fits the stride; a shared plan's
// heads hold identical entries; and (capacity >= 0) no head keeps more than `capacity`.
void validate_plan(const kvc_plan& plan, const kvc_cache_view& view, int64_t capacity,
                   const std::string& policy_label);

}  // namespace kvc
