// sepllm (SepLLM, streaming variant): the cache grows to cache_size; when it exceeds it, keep
// the first start_size entries, the most recent separator_size separator entries of the middle
// and the last local_size entries (a burst, not every step). Separators are token ids, given
// directly or as strings mapped through the model's tokenizer. A rule: the engine runs it.
#include "standard_params.h"

namespace {

using namespace kvc::bundled;

class SepLLM {
 public:
  static constexpr const char* name = "sepllm";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "SepLLM: sinks, recent separator tokens and a local window";
  static constexpr kvc_param_info params[] = {
      kStartSize, kSeparatorSize, kLocalSize,
      size_param("cache_size", "512", 1,
                 "The cache is cut back when it exceeds this; start + separator + local must be "
                 "smaller"),
      kSeparators, kSeparatorStrings,
  };

  SepLLM(const kvc::sdk::Host& host, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    const int64_t a = p.get_int("start_size"), s = p.get_int("separator_size"),
                  w = p.get_int("local_size"), c = p.get_int("cache_size");
    kvc::sdk::require(a + s + w < c, "start_size + separator_size + local_size (", a, " + ", s,
                      " + ", w, " = ", a + s + w, ") must be less than cache_size (", c, ")");
    // Token-based: every head keeps the same entries.
    rule_.sinks(a).recent(w).separators(s, separators(host, p));
    rule_.scope(KVC_SCOPE_SHARED, {0}).burst_at(c).finish(setup);
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(SepLLM)
