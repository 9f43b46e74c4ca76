// h2o (Heavy-Hitter Oracle): sinks, a recent window, and the heavy_size middle entries with the
// most accumulated attention (ties: older first). Per head by default; scope = shared sums the
// scores of score_layers over heads and keeps one set everywhere (the seed project: layer 0).
// allocation = adaptive shares each layer's heavy budget between its heads (Ada-KV).
// A rule: the engine runs it and never calls back.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class H2O {
 public:
  static constexpr const char* name = "h2o";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "H2O: sinks, recent window and heavy hitters by accumulated attention";
  static constexpr kvc_param_info params[] = {kStartSize,   kRecentSize, kHeavySize, kScope,
                                              kScoreLayers, kAllocation, kFloor};

  H2O(const kvc::sdk::Host& host, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    rule_.sinks(p.get_int("start_size")).recent(p.get_int("recent_size"));
    rule_.heavy(p.get_int("heavy_size"), KVC_SIGNAL_ACC_ATTENTION);
    rule_.scope(scope(p), score_layers(host, p));
    allocation(rule_, p, scope(p) == KVC_SCOPE_SHARED ? "scope = shared" : "");
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(H2O)
