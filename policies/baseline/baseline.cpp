// baseline: the full cache. Nothing is ever evicted, so the engine never consults the policy.
#include "kvc_policy_util.h"

namespace {

int create(const kvc_policy_host*, const kvc_policy_value*, kvc_policy_setup* setup,
           void** instance) {
  setup->signals = 0;
  setup->trigger = KVC_TRIGGER_NEVER;
  setup->trigger_size = 0;
  setup->capacity = -1;
  setup->use_rule = 0;
  *instance = nullptr;
  return 0;
}

void destroy(void*) {}

const kvc_policy_descriptor kDescriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "baseline",
    KVC_POLICY_VERSION, "Full cache: nothing is evicted", nullptr, 0, create, destroy,
    nullptr, nullptr, nullptr};

}  // namespace

KVC_POLICY_DEFINE_ENTRY(kDescriptor)
