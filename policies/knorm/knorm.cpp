// knorm (Devoto et al. 2024): sinks, a recent window, and the heavy_size middle entries whose
// keys have the lowest L2 norm (before rotary, which preserves it). Needs no attention
// weights. A rule: the engine runs it and never calls back.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class KNorm {
 public:
  static constexpr const char* name = "knorm";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "KNorm: middle entries kept by the lowest key L2 norm (no attention weights needed)";
  static constexpr kvc_param_info params[] = {
      kStartSize, kRecentSize,
      size_param("heavy_size", "128", 0, "Middle entries kept (those with the lowest key norms)"),
      kAllocation, kFloor,
  };

  KNorm(const kvc::sdk::Host&, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    rule_.sinks(p.get_int("start_size")).recent(p.get_int("recent_size"));
    rule_.heavy(p.get_int("heavy_size"), KVC_SIGNAL_KEY_NORM, KVC_ORDER_SMALLEST);
    allocation(rule_, p, "");
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(KNorm)
