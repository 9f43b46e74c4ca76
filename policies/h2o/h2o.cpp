// h2o (Heavy-Hitter Oracle): sinks, a recent window, and the heavy_size middle entries with the
// most accumulated attention (ties: older first). Per head by default; scope = shared sums the
// scores of score_layers over heads and keeps one set everywhere (the seed project: layer 0).
// A pure rule: the engine runs it and never calls back.
#include <new>

#include "kvc_policy_util.h"

namespace {

const kvc_param_info kParams[] = {
    kvc_policy::param::kStartSize,
    kvc_policy::param::kRecentSize,
    kvc_policy::param::kHeavySize,
    kvc_policy::param::kScope,
    kvc_policy::param::kScoreLayers,
};

struct Instance {
  std::vector<int32_t> layers;
};

int create(const kvc_policy_host* host, const kvc_policy_value* v, kvc_policy_setup* setup,
           void** instance) {
  return kvc_policy::guarded(host, [&] {
    const int64_t a = v[0].i, r = v[1].i, h = v[2].i;
    if (a + r + h < 1)
      return kvc_policy::fail(host, "start_size + recent_size + heavy_size must be at least 1");
    auto* inst = new Instance();
    if (kvc_policy::collect_layers(host, v[4], &inst->layers) != 0) {
      delete inst;
      return 1;
    }
    setup->signals = KVC_SIGNAL_ACC_ATTENTION;
    setup->trigger = KVC_TRIGGER_OVER_CAPACITY;
    setup->trigger_size = a + r + h;
    setup->capacity = a + r + h;
    setup->use_rule = 1;
    kvc_rule& rule = setup->rule;
    rule.sink_size = a;
    rule.recent_size = r;
    rule.heavy_size = h;
    rule.heavy_signal = KVC_SIGNAL_ACC_ATTENTION;
    rule.scope = v[3].i == 1 ? KVC_SCOPE_SHARED : KVC_SCOPE_PER_HEAD;
    rule.score_layers = inst->layers.empty() ? nullptr : inst->layers.data();
    rule.n_score_layers = inst->layers.size();
    *instance = inst;
    return 0;
  });
}

void destroy(void* instance) { delete static_cast<Instance*>(instance); }

const kvc_policy_descriptor kDescriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "h2o",
    KVC_POLICY_VERSION, "H2O: sinks, recent window and heavy hitters by accumulated attention",
    kParams, sizeof kParams / sizeof kParams[0], create, destroy, nullptr, nullptr, nullptr};

}  // namespace

KVC_POLICY_DEFINE_ENTRY(kDescriptor)
