// baseline: the full cache. Nothing is ever evicted, so the engine never consults the policy.
#include <kvc/policy.hpp>

namespace {

class Baseline {
 public:
  static constexpr const char* name = "baseline";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description = "Full cache: nothing is evicted";

  Baseline(const kvc::sdk::Host&, const kvc::sdk::Params&, kvc_policy_setup& setup) {
    setup.trigger = KVC_TRIGGER_NEVER;
    setup.capacity = -1;
  }
};

}  // namespace

KVC_SDK_POLICY(Baseline)
