// lazy_h2o (periodic H2O, from the seed project): a StreamingLLM window plus a heavy-hitter
// set that is only re-selected every update_interval steps; in between, one entry per step
// leaves FIFO-style (the oldest unprotected middle entry). The score work is done once per
// interval, which is the point of the method.
//
// This is the exemplar of the callback path: the engine calls decide after every step with a
// read-only view; decide writes a plan into the engine's buffers (KVC_PLAN_EVICT of one rank
// per head on FIFO steps, KVC_PLAN_KEEP on refresh steps) and keeps its own small state (the
// step counter and the protected positions). The rule itself is in common/kvc_policy_util.h
// (LazyRule), shared with unified's lazy variant.
#include "kvc_policy_util.h"

namespace {

const kvc_param_info kParams[] = {
    kvc_policy::param::kStartSize,
    kvc_policy::param::kRecentSize,
    kvc_policy::param::kHeavySize,
    kvc_policy::param::kScope,
    kvc_policy::param::kScoreLayers,
    {sizeof(kvc_param_info), "update_interval", KVC_PARAM_INT, "10", 1, KVC_POLICY_MAX_SIZE,
     nullptr, "Heavy hitters are re-selected on steps where step_counter % update_interval == 0"},
};

struct Instance {
  const kvc_policy_host* host;
  kvc_policy::LazyRule rule;
};

int create(const kvc_policy_host* host, const kvc_policy_value* v, kvc_policy_setup* setup,
           void** instance) {
  return kvc_policy::guarded(host, [&] {
    auto* inst = new Instance();
    inst->host = host;
    kvc_policy::LazyRule& rule = inst->rule;
    rule.sink = v[0].i;
    rule.recent = v[1].i;
    rule.heavy = v[2].i;
    rule.shared = v[3].i == 1;
    rule.interval = v[5].i;
    if (rule.capacity() < 1) {
      delete inst;
      return kvc_policy::fail(host, "start_size + recent_size + heavy_size must be at least 1");
    }
    if (kvc_policy::collect_layers(host, v[4], &rule.score_layers) != 0) {
      delete inst;
      return 1;
    }
    setup->signals = KVC_SIGNAL_ACC_ATTENTION;
    setup->trigger = KVC_TRIGGER_EVERY_STEP;  // the step counter must see every step
    setup->trigger_size = rule.capacity();
    setup->capacity = rule.capacity();
    setup->use_rule = 0;
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
  return kvc_policy::guarded(inst->host,
                             [&] { return inst->rule.decide(inst->host, *view, *plan); });
}

const kvc_policy_descriptor kDescriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "lazy_h2o",
    KVC_POLICY_VERSION,
    "Lazy H2O: heavy hitters re-selected every update_interval steps, FIFO eviction between",
    kParams, sizeof kParams / sizeof kParams[0], create, destroy, reset, decide, nullptr};

}  // namespace

KVC_POLICY_DEFINE_ENTRY(kDescriptor)
