// unified (the seed project's initial + separator + heavy hitter + local): keep sinks, the last
// local_size entries, the most recent separator_size separators of the middle, and among the
// remaining middle the heavy_size entries with the most accumulated attention. With
// update_interval > 0 the heavy set follows the lazy_h2o rule (re-selected every
// update_interval steps, FIFO in between): the seed's lazy_unified. A rule: the engine runs it.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class Unified {
 public:
  static constexpr const char* name = "unified";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "Sinks, recent separators, heavy hitters and a local window (lazy with update_interval)";
  static constexpr kvc_param_info params[] = {
      kStartSize, kSeparatorSize, kHeavySize, kLocalSize, kScope, kScoreLayers,
      size_param("update_interval", "0", 0,
                 "0: select heavy hitters at every eviction; N > 0: the lazy_h2o rule with N"),
      kSeparators, kSeparatorStrings,
  };

  Unified(const kvc::sdk::Host& host, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    rule_.sinks(p.get_int("start_size")).recent(p.get_int("local_size"));
    rule_.separators(p.get_int("separator_size"), separators(host, p));
    rule_.heavy(p.get_int("heavy_size"), KVC_SIGNAL_ACC_ATTENTION);
    rule_.scope(scope(p), score_layers(host, p)).lazy(p.get_int("update_interval"));
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(Unified)
