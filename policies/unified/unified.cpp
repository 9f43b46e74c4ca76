// unified (the seed project's initial + separator + heavy hitter + local): keep sinks, the last
// local_size entries, the most recent separator_size separators of the middle, and among the
// remaining middle the heavy_size entries with the most accumulated attention. With
// update_interval = 0 this is a rule the engine runs; with update_interval > 0 the heavy set
// follows the lazy_h2o rule (re-selected every update_interval steps, FIFO in between) through
// the decide callback.
#include "kvc_policy_util.h"

namespace {

const kvc_param_info kParams[] = {
    kvc_policy::param::kStartSize,
    kvc_policy::param::kSeparatorSize,
    kvc_policy::param::kHeavySize,
    kvc_policy::param::kLocalSize,
    kvc_policy::param::kScope,
    kvc_policy::param::kScoreLayers,
    {sizeof(kvc_param_info), "update_interval", KVC_PARAM_INT, "0", 0, KVC_POLICY_MAX_SIZE,
     nullptr, "0: select heavy hitters at every eviction; N > 0: the lazy_h2o rule with N"},
    kvc_policy::param::kSeparators,
    kvc_policy::param::kSeparatorStrings,
};

struct Instance {
  const kvc_policy_host* host;
  std::vector<int32_t> separators;
  std::vector<int32_t> layers;
  bool lazy = false;
  kvc_policy::LazyRule rule;
};

int create(const kvc_policy_host* host, const kvc_policy_value* v, kvc_policy_setup* setup,
           void** instance) {
  return kvc_policy::guarded(host, [&] {
    const int64_t a = v[0].i, s = v[1].i, h = v[2].i, w = v[3].i;
    if (a + s + h + w < 1)
      return kvc_policy::fail(
          host, "start_size + separator_size + heavy_size + local_size must be at least 1");
    auto* inst = new Instance();
    inst->host = host;
    if (kvc_policy::collect_layers(host, v[5], &inst->layers) != 0 ||
        kvc_policy::collect_separators(host, v[7], v[8], &inst->separators) != 0) {
      delete inst;
      return 1;
    }
    const bool shared = v[4].i == 1;
    const int64_t capacity = a + s + h + w;
    setup->signals = KVC_SIGNAL_ACC_ATTENTION;
    setup->capacity = capacity;
    setup->trigger_size = capacity;
    if (v[6].i == 0) {
      setup->trigger = KVC_TRIGGER_OVER_CAPACITY;
      setup->use_rule = 1;
      kvc_rule& rule = setup->rule;
      rule.sink_size = a;
      rule.recent_size = w;
      rule.separator_size = s;
      rule.separator_ids = inst->separators.empty() ? nullptr : inst->separators.data();
      rule.n_separator_ids = inst->separators.size();
      rule.heavy_size = h;
      rule.heavy_signal = KVC_SIGNAL_ACC_ATTENTION;
      rule.scope = shared ? KVC_SCOPE_SHARED : KVC_SCOPE_PER_HEAD;
      rule.score_layers = inst->layers.empty() ? nullptr : inst->layers.data();
      rule.n_score_layers = inst->layers.size();
    } else {
      inst->lazy = true;
      kvc_policy::LazyRule& rule = inst->rule;
      rule.sink = a;
      rule.recent = w;
      rule.separator = s;
      rule.heavy = h;
      rule.interval = v[6].i;
      rule.shared = shared;
      rule.score_layers = inst->layers;
      rule.separators.assign(inst->separators);
      setup->trigger = KVC_TRIGGER_EVERY_STEP;  // the step counter must see every step
      setup->use_rule = 0;
    }
    *instance = inst;
    return 0;
  });
}

void destroy(void* instance) { delete static_cast<Instance*>(instance); }

int reset(void* instance) {
  static_cast<Instance*>(instance)->rule.reset();
  return 0;
}

int decide(void* instance, const kvc_cache_view* view, kvc_plan* plan) {
  auto* inst = static_cast<Instance*>(instance);
  if (!inst->lazy) return kvc_policy::fail(inst->host, "decide called on a rule setup");
  return kvc_policy::guarded(inst->host,
                             [&] { return inst->rule.decide(inst->host, *view, *plan); });
}

const kvc_policy_descriptor kDescriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "unified",
    KVC_POLICY_VERSION,
    "Sinks, recent separators, heavy hitters and a local window (lazy with update_interval)",
    kParams, sizeof kParams / sizeof kParams[0], create, destroy, reset, decide, nullptr};

}  // namespace

KVC_POLICY_DEFINE_ENTRY(kDescriptor)
