// keydiff (KeyDiff, Park et al. 2025): sinks, a recent window, and the heavy_size middle
// entries whose keys are least like the head's average key: the lowest cosine similarity
// between the entry's pre-rotary key and the mean of the unit pre-rotary keys now cached in
// that (layer, head). Needs no attention weights. A rule: the engine runs it.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class KeyDiff {
 public:
  static constexpr const char* name = "keydiff";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "KeyDiff: middle entries kept by the lowest cosine of their key to the mean key";
  static constexpr kvc_param_info params[] = {
      kStartSize, kRecentSize,
      size_param("heavy_size", "128", 0,
                 "Middle entries kept (those whose keys are least like the mean key)"),
      kAllocation, kFloor,
  };

  KeyDiff(const kvc::sdk::Host&, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    rule_.sinks(p.get_int("start_size")).recent(p.get_int("recent_size"));
    rule_.heavy(p.get_int("heavy_size"), KVC_SIGNAL_KEY_MEAN_COSINE, KVC_ORDER_SMALLEST);
    allocation(rule_, p, "");
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(KeyDiff)
