// tova (TOVA, Oren et al. 2024): once a cache holds more than `budget` entries, keep the
// start_size sinks, the newest entry (the query's own key) and, of the rest, those the latest
// query attended most. granularity = per_layer (the paper's) averages that attention over the
// layer's heads and keeps one set per layer; per_head ranks each head alone (and allows
// allocation = adaptive). A rule: the engine runs it and never calls back.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class Tova {
 public:
  static constexpr const char* name = "tova";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "TOVA: keeps the entries the latest query attended most, within a fixed budget";
  static constexpr kvc_param_info params[] = {
      size_param("budget", "256", 1, "Entries kept per (layer, head) once the cache is full"),
      size_param("start_size", "0", 0, "Initial entries always kept (attention sinks)"),
      kvc::sdk::choice_param("granularity", "per_layer", "per_layer|per_head",
                             "per_layer: attention averaged over the layer's heads, one set per "
                             "layer (the paper); per_head: each head keeps its own"),
      kAllocation, kFloor,
  };

  Tova(const kvc::sdk::Host&, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    const int64_t budget = p.get_int("budget"), start = p.get_int("start_size");
    kvc::sdk::require(budget > start, "budget ", budget, " must exceed start_size ", start,
                      " (the newest entry is always kept as well)");
    const bool per_head = p.get_choice("granularity") == "per_head";
    rule_.sinks(start).recent(1).heavy(budget - start - 1, KVC_SIGNAL_LAST_ATTENTION);
    rule_.scope(per_head ? KVC_SCOPE_PER_HEAD : KVC_SCOPE_PER_LAYER);
    allocation(rule_, p, per_head ? "" : "granularity = per_layer");
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(Tova)
