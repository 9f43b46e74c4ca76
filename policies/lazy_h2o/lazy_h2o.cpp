// lazy_h2o (periodic H2O, from the seed project): a StreamingLLM window plus a heavy-hitter
// set that is only re-selected every update_interval steps; in between, one entry per step
// leaves FIFO-style (the oldest unprotected middle entry). The score work is done once per
// interval, which is the point of the method. A rule with the engine's lazy refresh.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class LazyH2O {
 public:
  static constexpr const char* name = "lazy_h2o";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "Lazy H2O: heavy hitters re-selected every update_interval steps, FIFO eviction between";
  static constexpr kvc_param_info params[] = {
      kStartSize, kRecentSize, kHeavySize, kScope, kScoreLayers,
      size_param("update_interval", "10", 1,
                 "Heavy hitters are re-selected on steps where step_counter % update_interval == 0"),
      kAllocation, kFloor,
  };

  LazyH2O(const kvc::sdk::Host& host, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    rule_.sinks(p.get_int("start_size")).recent(p.get_int("recent_size"));
    rule_.heavy(p.get_int("heavy_size"), KVC_SIGNAL_ACC_ATTENTION);
    rule_.scope(scope(p), score_layers(host, p)).lazy(p.get_int("update_interval"));
    allocation(rule_, p, scope(p) == KVC_SCOPE_SHARED ? "scope = shared" : "");
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(LazyH2O)
