// PolicyInstance: one plugin instance, its validated setup, and its decisions.
#include <algorithm>
#include <cstring>
#include <exception>

#include "common/error.h"
#include "policy/policy.h"

namespace kvc {

namespace {

constexpr uint32_t kKnownSignals = KVC_SIGNAL_ACC_ATTENTION | KVC_SIGNAL_LAST_ATTENTION |
                                   KVC_SIGNAL_KEY_NORM | KVC_SIGNAL_WINDOW_ATTENTION |
                                   KVC_SIGNAL_KEY_MEAN_COSINE | KVC_SIGNAL_PIVOTAL_COUNT;

// A C plugin may store any int in an enum field; loading an out-of-range enum is UB in C++.
template <class E>
int32_t raw_enum(const E& e) {
  int32_t v = 0;
  static_assert(sizeof e == sizeof v);
  std::memcpy(&v, &e, sizeof v);
  return v;
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

void PolicyInstance::note_trampoline(void* self, const char* message) {
  if (message != nullptr) static_cast<PolicyInstance*>(self)->notes_.emplace_back(message);
}

uint32_t PolicyInstance::ranking_signal() const {
  if (rule_ && setup_.use_rule && (setup_.rule.heavy_size > 0 || setup_.rule.layer_heavy_sizes))
    return setup_.rule.heavy_signal;
  if (rule_) return 0;
  for (uint32_t bit = 1; bit != 0 && bit <= setup_.signals; bit <<= 1)
    if (setup_.signals & bit) return bit;
  return 0;
}

template <class F>
void PolicyInstance::call(const char* callback, kvc_status status, F&& f) {
  const std::string& label = policy_->label();
  error_.clear();
  int rc = 0;
  try {
    rc = f();
  } catch (const std::exception& e) {
    fail(KVC_ERR_POLICY, label + ": " + callback + " failed: a C++ exception escaped the plugin "
                         "(exceptions must not cross the C ABI): " + e.what());
  } catch (...) {
    fail(KVC_ERR_POLICY, label + ": " + callback + " failed: an exception escaped the plugin "
                         "(exceptions must not cross the C ABI)");
  }
  if (rc != 0)
    fail(status, label + ": " + callback + " failed: " +
                     (error_.empty() ? std::string("no message (set_error was not called)")
                                     : error_));
}

PolicyInstance::PolicyInstance(std::shared_ptr<const LoadedPolicy> policy,
                               const kvc_policy_host& host, const PolicyParams& params)
    : policy_(std::move(policy)), outer_(host) {
  require(policy_ != nullptr, KVC_ERR_INVALID_ARGUMENT, "PolicyInstance: no policy");
  create(params);
}

PolicyInstance::PolicyInstance(std::shared_ptr<const LoadedPolicy> policy,
                               const kvc_policy_host& host, const kvc_param* params,
                               size_t n_params)
    : policy_(std::move(policy)), outer_(host) {
  require(policy_ != nullptr, KVC_ERR_INVALID_ARGUMENT, "PolicyInstance: no policy");
  const auto parsed = policy_->make_params();
  parsed->set_all(params, n_params);
  create(*parsed);
}

void PolicyInstance::create(const PolicyParams& params) {
  host_ = outer_;
  host_.struct_size = sizeof(kvc_policy_host);
  host_.host_data = this;
  host_.tokenize = &tokenize_trampoline;
  host_.set_error = &set_error_trampoline;
  host_.note = &note_trampoline;

  setup_ = kvc_policy_setup{};
  setup_.struct_size = sizeof(kvc_policy_setup);
  setup_.capacity = -1;
  setup_.rule.struct_size = sizeof(kvc_rule);
  const kvc_policy_descriptor& d = *policy_->desc;
  void* inst = nullptr;
  // A nonzero return means the plugin refused its parameters (or the model): its message
  // says why, and the caller's input is what must change.
  call("create", KVC_ERR_INVALID_ARGUMENT,
       [&] { return d.create(&host_, params.values(), &setup_, &inst); });
  instance_ = inst;
  try {
    const std::string bad = policy_->label() + " returned an invalid setup: ";
    auto need = [&](bool ok, const std::string& what) { require(ok, KVC_ERR_POLICY, bad + what); };
    const kvc_policy_setup& s = setup_;
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
      // A callback's windowed signals take their window from rule.signal_window too.
      if (s.signals & (KVC_SIGNAL_WINDOW_ATTENTION | KVC_SIGNAL_PIVOTAL_COUNT))
        need(s.rule.signal_window >= 1 && s.rule.signal_window <= kMaxSignalWindow,
             "rule.signal_window " + std::to_string(s.rule.signal_window) +
                 " (the requested WINDOW_ATTENTION / PIVOTAL_COUNT need a window in [1, " +
                 std::to_string(kMaxSignalWindow) + "])");
      if (d.get_extension != nullptr)
        call("get_extension", KVC_ERR_POLICY, [&] {
          layer_local_callback_ = d.get_extension(instance_, KVC_EXTENSION_LAYER_LOCAL) != nullptr;
          return 0;
        });
    } else {
      rule_.emplace(s.rule, s.trigger == KVC_TRIGGER_OVER_CAPACITY ? s.trigger_size : 0,
                    outer_.n_layers, outer_.n_heads);
      rule_->validate(s.signals, bad);
      const int64_t most = rule_->max_keep_per_head();
      need(s.capacity < 0 || most <= s.capacity,
           "the rule may keep up to " + std::to_string(most) +
               " entries in one (layer, head), more than the capacity " +
               std::to_string(s.capacity));
    }
  } catch (...) {
    rule_.reset();
    d.destroy(instance_);
    instance_ = nullptr;
    throw;
  }
}

PolicyInstance::~PolicyInstance() {
  if (!policy_) return;
  try {
    policy_->desc->destroy(instance_);
  } catch (...) {
    // Nothing can be reported from a destructor; the instance is gone either way.
  }
}

void PolicyInstance::reset() {
  steps_ = 0;
  if (rule_) rule_->reset();
  const kvc_policy_descriptor& d = *policy_->desc;
  if (d.reset == nullptr) return;
  call("reset", KVC_ERR_POLICY, [&] { return d.reset(instance_); });
}

void PolicyInstance::count_step() {
  ++steps_;
  if (rule_) rule_->count_step();
}

bool PolicyInstance::triggered(const int64_t* counts, int32_t n_layers, int32_t n_heads) const {
  switch (setup_.trigger) {
    case KVC_TRIGGER_NEVER:
      return false;
    case KVC_TRIGGER_EVERY_STEP:
      return true;
    case KVC_TRIGGER_OVER_CAPACITY:
      if (rule_) return rule_->over(counts);
      return std::any_of(counts, counts + static_cast<int64_t>(n_layers) * n_heads,
                         [&](int64_t c) { return c > setup_.trigger_size; });
  }
  return false;
}

PolicyInstance::Layerwise PolicyInstance::layerwise(std::string* why) const {
  const auto no = [&](const std::string& reason) {
    if (why) *why = reason;
    return Layerwise::No;
  };
  if (setup_.trigger == KVC_TRIGGER_NEVER) return Layerwise::None;
  if (rule_) {
    switch (rule_->locality()) {
      case RuleEngine::Locality::PerLayer: return Layerwise::PerLayer;
      case RuleEngine::Locality::LayerZero: return Layerwise::LayerZero;
      case RuleEngine::Locality::WholeModel:
        return no(policy_->label() + " sums its scores over layers other than layer 0 (shared "
                                     "scope), so a step's decision needs every layer");
    }
  }
  if (layer_local_callback_) return Layerwise::PerLayer;
  return no(policy_->label() + " decides in a callback that does not declare its decisions "
                               "layer-local (extension " KVC_EXTENSION_LAYER_LOCAL ")");
}

bool PolicyInstance::layer_triggered(int32_t layer, const int64_t* counts,
                                     int32_t n_heads) const {
  switch (setup_.trigger) {
    case KVC_TRIGGER_NEVER:
      return false;
    case KVC_TRIGGER_EVERY_STEP:
      return true;
    case KVC_TRIGGER_OVER_CAPACITY: {
      if (rule_) return rule_->over_layer(layer, counts);
      const int64_t* c = counts + static_cast<int64_t>(layer) * n_heads;
      return std::any_of(c, c + n_heads, [&](int64_t n) { return n > setup_.trigger_size; });
    }
  }
  return false;
}

bool PolicyInstance::decide_layer(int32_t layer, int64_t step, const kvc_cache_view& view,
                                  kvc_plan& plan) {
  plan.kind = KVC_PLAN_NOTHING;
  plan.shared = 0;
  try {
    if (rule_) return rule_->decide_layer(layer, step, view, plan);
    // A layer-local callback sees its layer as a one-layer cache; its lists are that layer's.
    const int64_t first = static_cast<int64_t>(layer) * view.n_heads;
    kvc_cache_view one = view;
    one.n_layers = 1;
    one.heads = view.heads + first;
    one.first_layer = layer;
    const auto offset = [&](const float* const* a) { return a ? a + first : nullptr; };
    one.window_attention = offset(view.window_attention);
    one.key_mean_cosine = offset(view.key_mean_cosine);
    one.pivotal_count = offset(view.pivotal_count);
    kvc_plan part = plan;
    part.ranks = plan.ranks + first * plan.stride;
    part.counts = plan.counts + first;
    call("decide", KVC_ERR_POLICY, [&] { return policy_->desc->decide(instance_, &one, &part); });
    validate_plan(part, one, setup_.capacity, policy_->label());
    if (part.kind != KVC_PLAN_NOTHING && part.shared) {  // list 0 of the layer for every head
      for (int32_t h = 1; h < view.n_heads; ++h) {
        std::copy(part.ranks, part.ranks + part.counts[0], part.ranks + h * part.stride);
        part.counts[h] = part.counts[0];
      }
    }
    plan.kind = part.kind;
    return part.kind != KVC_PLAN_NOTHING;
  } catch (...) {
    plan.kind = KVC_PLAN_NOTHING;  // never applied
    throw;
  }
}

void PolicyInstance::decide(const kvc_cache_view& view, kvc_plan& plan) {
  plan.kind = KVC_PLAN_NOTHING;
  plan.shared = 0;
  if (setup_.trigger == KVC_TRIGGER_NEVER) return;
  try {
    if (rule_) {
      // The engine's own executor: its plans are valid by construction (fuzz_plan checks it).
      rule_->decide(view, plan);
    } else {
      call("decide", KVC_ERR_POLICY,
           [&] { return policy_->desc->decide(instance_, &view, &plan); });
      validate_plan(plan, view, setup_.capacity, policy_->label());
    }
  } catch (...) {
    plan.kind = KVC_PLAN_NOTHING;  // never applied
    throw;
  }
}

}  // namespace kvc
