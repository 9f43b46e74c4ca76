// scissorhands (Scissorhands, Liu et al. 2023), kvc's reading: H2O's sinks, recent window and
// heavy budget, with the middle ranked by importance = how many of the last `history` queries
// gave the entry at least a uniform share of their attention (the "pivotal" tokens), then by
// accumulated attention, then older first. A rule: the engine runs it and never calls back.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class Scissorhands {
 public:
  static constexpr const char* name = "scissorhands";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "Scissorhands: middle entries kept by how often recent queries found them pivotal";
  static constexpr kvc_param_info params[] = {
      kStartSize, kRecentSize,
      size_param("heavy_size", "128", 0, "Middle entries kept by importance"),
      kvc::sdk::int_param("history", "256", 1, 65536,
                          "Queries counted: an entry's importance is how many of the last "
                          "`history` gave it at least 1 / (keys they attended)"),
      kAllocation, kFloor,
  };

  Scissorhands(const kvc::sdk::Host&, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    rule_.sinks(p.get_int("start_size")).recent(p.get_int("recent_size"));
    rule_.heavy(p.get_int("heavy_size"), KVC_SIGNAL_PIVOTAL_COUNT).window(p.get_int("history"));
    rule_.tie(KVC_SIGNAL_ACC_ATTENTION);
    allocation(rule_, p, "");
    rule_.finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(Scissorhands)
