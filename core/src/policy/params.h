// Policy parameters: one typed value per entry of a plugin's schema, defaults filled in.
//
// Values arrive once, at the C ABI edge, either typed (kvc_policy_params_set_int, ..., from a
// TOML config) or as text in the kvc_param syntax (a command-line NAME=VALUE); each is parsed
// and range-checked against the schema when it is set, and the plugin's create receives the
// typed kvc_policy_value array. Nothing is turned back into text in between.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvc/kvc.h"
#include "kvc/policy.h"

namespace kvc {

class PolicyParams {
 public:
  // Every value starts at its schema default. `label` ("policy 'h2o' (/path/...)") prefixes
  // every message. The schema's strings must outlive this object (they are the plugin's).
  PolicyParams(std::vector<kvc_param_info> schema, std::string label);
  PolicyParams(const PolicyParams&) = delete;  // values point into the slots
  PolicyParams& operator=(const PolicyParams&) = delete;

  size_t size() const { return schema_.size(); }
  const kvc_param_info& info(size_t i) const { return schema_[i]; }
  // The index of `name`; KVC_ERR_INVALID_ARGUMENT listing the valid names when unknown.
  size_t index_of(const char* name) const;
  // Whether the caller set the value (false: the schema default).
  bool is_set(size_t i) const { return slots_[i].given; }

  // Setters: each checks the value against the schema (type, range, choices) and marks the
  // parameter as set. Setting one parameter twice is an error: callers resolve precedence.
  // Errors are KVC_ERR_INVALID_ARGUMENT naming the policy, the parameter, the value and what
  // was expected.
  void set_text(const char* name, const char* text);  // the kvc_param text syntax
  void set_int(const char* name, int64_t value);      // INT, FLOAT, or a one-item INT_LIST
  void set_float(const char* name, double value);     // FLOAT
  void set_bool(const char* name, bool value);        // BOOL
  void set_ints(const char* name, const int64_t* values, size_t n);            // INT_LIST
  void set_strings(const char* name, const char* const* values, size_t n);     // STRING_LIST
  // Text pairs, in order (the kvc_param interface): set_text for each.
  void set_all(const kvc_param* params, size_t n);

  // One kvc_policy_value per schema entry (what create receives); valid until the next set.
  const kvc_policy_value* values() const { return values_.data(); }
  // The value of parameter i as the C ABI hands it out (kvc_policy_params_get).
  kvc_param_value value(size_t i) const;

  // Parses `text` for `info` without storing it; `where` prefixes messages. Used to validate a
  // plugin's schema defaults when it is loaded.
  static void check_text(const kvc_param_info& info, const std::string& text,
                         const std::string& where);

 private:
  struct Slot {
    bool given = false;
    int64_t i = 0;
    double f = 0;
    std::vector<int64_t> ints;
    std::vector<std::string> strings;
    std::vector<const char*> cstrs;
  };
  Slot& slot_to_set(const char* name, size_t* index);
  void publish(size_t i);  // refreshes values_[i] from slots_[i]
  std::string where(size_t i) const;

  std::vector<kvc_param_info> schema_;
  std::string label_;
  std::vector<Slot> slots_;
  std::vector<kvc_policy_value> values_;
};

}  // namespace kvc
