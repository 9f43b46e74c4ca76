// streaming (StreamingLLM): keep the first start_size entries (attention sinks) and the last
// recent_size; once the cache exceeds start + recent, one entry is evicted per step.
// A pure rule: the engine runs it and never calls back.
#include "kvc_policy_util.h"

namespace {

const kvc_param_info kParams[] = {
    kvc_policy::param::kStartSize,
    kvc_policy::param::kRecentSize,
};

int create(const kvc_policy_host* host, const kvc_policy_value* v, kvc_policy_setup* setup,
           void** instance) {
  const int64_t a = v[0].i, r = v[1].i;
  if (a + r < 1) return kvc_policy::fail(host, "start_size + recent_size must be at least 1");
  setup->signals = 0;
  setup->trigger = KVC_TRIGGER_OVER_CAPACITY;
  setup->trigger_size = a + r;
  setup->capacity = a + r;
  setup->use_rule = 1;
  setup->rule.sink_size = a;
  setup->rule.recent_size = r;
  setup->rule.scope = KVC_SCOPE_SHARED;  // position-only: every head keeps the same entries
  *instance = nullptr;
  return 0;
}

void destroy(void*) {}

const kvc_policy_descriptor kDescriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "streaming",
    KVC_POLICY_VERSION, "StreamingLLM: attention sinks plus a window of recent entries",
    kParams, sizeof kParams / sizeof kParams[0], create, destroy, nullptr, nullptr, nullptr};

}  // namespace

KVC_POLICY_DEFINE_ENTRY(kDescriptor)
