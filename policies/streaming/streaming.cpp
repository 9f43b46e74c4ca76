// streaming (StreamingLLM): keep the first start_size entries (attention sinks) and the last
// recent_size; once the cache exceeds start + recent, one entry is evicted per step. A rule:
// the engine runs it and never calls back.
#include "standard_params.h"

namespace {

class Streaming {
 public:
  static constexpr const char* name = "streaming";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "StreamingLLM: attention sinks plus a window of recent entries";
  static constexpr kvc_param_info params[] = {kvc::bundled::kStartSize,
                                              kvc::bundled::kRecentSize};

  Streaming(const kvc::sdk::Host&, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    // Position-only: every head keeps the same entries.
    rule_.sinks(p.get_int("start_size")).recent(p.get_int("recent_size"));
    rule_.scope(KVC_SCOPE_SHARED, {0}).finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(Streaming)
