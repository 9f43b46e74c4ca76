// snapkv (SnapKV, Li et al. 2024): keep the sinks, the last `window` entries, and the
// heavy_size middle entries that the last `window` queries attended most on average, pooled
// over neighbouring entries. In a prefill the window is the prompt's last queries (the paper);
// in a stream the same rule runs whenever the cache is over capacity (kvc's reading, see
// docs/policies.md). A rule: the engine runs it and never calls back.
#include "snap_params.h"

namespace {

using namespace kvc::bundled;

class SnapKV {
 public:
  static constexpr const char* name = "snapkv";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "SnapKV: middle entries kept by the pooled attention of the last window queries";
  static constexpr kvc_param_info params[] = {kSnapWindow, kSnapKernel, kSnapPooling, kSnapStart,
                                              kSnapHeavy,  kAllocation, kFloor};

  SnapKV(const kvc::sdk::Host&, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    snap_rule(rule_, p);
    allocation(rule_, p, "");
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(SnapKV)
