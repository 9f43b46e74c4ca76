// PolicyInstance: one plugin instance, its validated setup, and its decisions.
#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "policy/policy.h"

namespace kvc {

namespace {

constexpr uint32_t kKnownSignals =
    KVC_SIGNAL_ACC_ATTENTION | KVC_SIGNAL_LAST_ATTENTION | KVC_SIGNAL_KEY_NORM;

// A C plugin may store any int in an enum field; loading an out-of-range enum is UB in C++.
template <class E>
int32_t raw_enum(const E& e) {
  int32_t v = 0;
  static_assert(sizeof e == sizeof v);
  std::memcpy(&v, &e, sizeof v);
  return v;
}

bool one_known_signal(uint32_t s) {
  return s == KVC_SIGNAL_ACC_ATTENTION || s == KVC_SIGNAL_LAST_ATTENTION ||
         s == KVC_SIGNAL_KEY_NORM;
}

void check_setup(const kvc_policy_setup& s, const kvc_policy_host& host,
                 const kvc_policy_descriptor& d, const std::string& label) {
  const std::string bad = label + " returned an invalid setup: ";
  auto need = [&](bool ok, const std::string& what) { require(ok, KVC_ERR_POLICY, bad + what); };
  const int32_t trigger = raw_enum(s.trigger);
  need(trigger == KVC_TRIGGER_NEVER || trigger == KVC_TRIGGER_OVER_CAPACITY ||
           trigger == KVC_TRIGGER_EVERY_STEP,
       "unknown trigger " + std::to_string(trigger));
  need((s.signals & ~kKnownSignals) == 0,
       "unknown signal flags " + std::to_string(s.signals & ~kKnownSignals));
  need(s.capacity >= -1, "capacity " + std::to_string(s.capacity) + " (expected -1 or >= 0)");
  if (s.trigger == KVC_TRIGGER_OVER_CAPACITY) {
    need(s.trigger_size >= 0, "trigger_size " + std::to_string(s.trigger_size) + " is negative");
    need(s.capacity < 0 || s.trigger_size <= s.capacity,
         "trigger_size " + std::to_string(s.trigger_size) + " exceeds the capacity " +
             std::to_string(s.capacity) + " (the cache must be allowed to reach the trigger)");
  }
  if (!s.use_rule) {
    need(s.trigger == KVC_TRIGGER_NEVER || d.decide != nullptr,
         "no rule and no decide callback, but the trigger is not NEVER");
    return;
  }
  const kvc_rule& r = s.rule;
  need(r.sink_size >= 0 && r.recent_size >= 0 && r.separator_size >= 0 && r.heavy_size >= 0,
       "rule sizes must not be negative (sink " + std::to_string(r.sink_size) + ", recent " +
           std::to_string(r.recent_size) + ", separator " + std::to_string(r.separator_size) +
           ", heavy " + std::to_string(r.heavy_size) + ")");
  need(r.n_separator_ids == 0 || r.separator_ids != nullptr,
       "rule lists " + std::to_string(r.n_separator_ids) + " separator ids but the array is NULL");
  const int32_t scope = raw_enum(r.scope);
  need(scope == KVC_SCOPE_PER_HEAD || scope == KVC_SCOPE_SHARED,
       "unknown scope " + std::to_string(scope));
  if (r.heavy_size > 0) {
    need(one_known_signal(r.heavy_signal),
         "heavy_signal " + std::to_string(r.heavy_signal) + " is not one KVC_SIGNAL_* flag");
    need((s.signals & r.heavy_signal) != 0,
         "the rule ranks by signal " + std::to_string(r.heavy_signal) +
             " but the setup does not request it in 'signals'");
  }
  need(r.n_score_layers == 0 || r.score_layers != nullptr,
       "rule lists " + std::to_string(r.n_score_layers) + " score layers but the array is NULL");
  if (host.n_layers > 0) {
    for (size_t i = 0; i < r.n_score_layers; ++i)
      need(r.score_layers[i] >= 0 && r.score_layers[i] < host.n_layers,
           "score layer " + std::to_string(r.score_layers[i]) + " is outside the model's " +
               std::to_string(host.n_layers) + " layers");
  }
  const int64_t most = r.sink_size + r.recent_size + r.separator_size + r.heavy_size;
  need(s.capacity < 0 || most <= s.capacity,
       "the rule may keep up to " + std::to_string(most) + " entries, more than the capacity " +
           std::to_string(s.capacity));
}

}  // namespace

int64_t PolicyInstance::tokenize_trampoline(void* self, const char* text, int32_t* ids,
                                            size_t cap) {
  auto* p = static_cast<PolicyInstance*>(self);
  if (p->outer_.tokenize == nullptr || text == nullptr) return -1;
  return p->outer_.tokenize(p->outer_.host_data, text, ids, cap);
}

void PolicyInstance::set_error_trampoline(void* self, const char* message) {
  static_cast<PolicyInstance*>(self)->error_ = message ? message : "";
}

std::string PolicyInstance::take_error(const char* fallback) {
  std::string m = error_.empty() ? std::string(fallback) : error_;
  error_.clear();
  return m;
}

PolicyInstance::PolicyInstance(std::shared_ptr<const LoadedPolicy> policy,
                               const kvc_policy_host& host, const kvc_param* params,
                               size_t n_params)
    : policy_(std::move(policy)), outer_(host) {
  require(policy_ != nullptr, KVC_ERR_INVALID_ARGUMENT, "PolicyInstance: no policy");
  params_ = std::make_unique<ParsedParams>(*policy_, params, n_params);
  host_ = outer_;
  host_.struct_size = sizeof(kvc_policy_host);
  host_.host_data = this;
  host_.tokenize = &tokenize_trampoline;
  host_.set_error = &set_error_trampoline;

  setup_ = kvc_policy_setup{};
  setup_.struct_size = sizeof(kvc_policy_setup);
  setup_.capacity = -1;
  setup_.rule.struct_size = sizeof(kvc_rule);
  const kvc_policy_descriptor& d = *policy_->desc;
  void* inst = nullptr;
  if (d.create(&host_, params_->values(), &setup_, &inst) != 0) {
    // The plugin refused its parameters (or the model): its message says why.
    fail(KVC_ERR_INVALID_ARGUMENT,
         policy_->label() + ": " + take_error("create failed without a message"));
  }
  instance_ = inst;
  try {
    check_setup(setup_, outer_, d, policy_->label());
  } catch (...) {
    d.destroy(instance_);
    instance_ = nullptr;
    throw;
  }
}

PolicyInstance::~PolicyInstance() {
  if (policy_) policy_->desc->destroy(instance_);
}

void PolicyInstance::reset() {
  const kvc_policy_descriptor& d = *policy_->desc;
  if (d.reset == nullptr) return;
  if (d.reset(instance_) != 0)
    fail(KVC_ERR_POLICY, policy_->label() + ": reset failed: " + take_error("no message"));
}

void PolicyInstance::decide(const kvc_cache_view& view, kvc_plan& plan) {
  const std::string& label = policy_->label();
  plan.kind = KVC_PLAN_NOTHING;
  plan.shared = 0;
  if (setup_.trigger == KVC_TRIGGER_NEVER) return;
  const int64_t n_groups = static_cast<int64_t>(view.n_layers) * view.n_heads;
  int64_t skip = -1;
  if (setup_.trigger == KVC_TRIGGER_OVER_CAPACITY) {
    // Only consulted once some (layer, head) exceeds trigger_size.
    int64_t most = 0;
    for (int64_t g = 0; g < n_groups; ++g) most = std::max(most, view.heads[g].n_entries);
    if (most <= setup_.trigger_size) return;
    skip = setup_.trigger_size;
  }
  if (setup_.use_rule) {
    execute_rule(setup_.rule, view, plan, skip);
  } else {
    if (policy_->desc->decide(instance_, &view, &plan) != 0) {
      plan.kind = KVC_PLAN_NOTHING;
      fail(KVC_ERR_POLICY, label + ": decide failed: " + take_error("no message"));
    }
  }
  try {
    validate_plan(plan, view, setup_.capacity, label);
  } catch (...) {
    plan.kind = KVC_PLAN_NOTHING;  // never applied
    throw;
  }
}

}  // namespace kvc
