// sepllm (SepLLM, streaming variant): the cache grows to cache_size; when it exceeds it, keep
// the first start_size entries, the most recent separator_size separator entries of the middle
// and the last local_size entries (a burst, not every step). Separators are token ids, given
// directly or as strings mapped through the model's tokenizer.
// A pure rule: the engine runs it and never calls back.
#include "kvc_policy_util.h"

namespace {

const kvc_param_info kParams[] = {
    kvc_policy::param::kStartSize,
    kvc_policy::param::kSeparatorSize,
    kvc_policy::param::kLocalSize,
    {sizeof(kvc_param_info), "cache_size", KVC_PARAM_INT, "512", 1, KVC_POLICY_MAX_SIZE,
     nullptr,
     "The cache is cut back when it exceeds this; start + separator + local must be smaller"},
    kvc_policy::param::kSeparators,
    kvc_policy::param::kSeparatorStrings,
};

struct Instance {
  std::vector<int32_t> separators;
};

int create(const kvc_policy_host* host, const kvc_policy_value* v, kvc_policy_setup* setup,
           void** instance) {
  return kvc_policy::guarded(host, [&] {
    const int64_t a = v[0].i, s = v[1].i, w = v[2].i, c = v[3].i;
    if (a + s + w >= c)
      return kvc_policy::fail(host,
                              "start_size + separator_size + local_size (%lld + %lld + %lld = "
                              "%lld) must be less than cache_size (%lld)",
                              static_cast<long long>(a), static_cast<long long>(s),
                              static_cast<long long>(w), static_cast<long long>(a + s + w),
                              static_cast<long long>(c));
    auto* inst = new Instance();
    if (kvc_policy::collect_separators(host, v[4], v[5], &inst->separators) != 0) {
      delete inst;
      return 1;
    }
    setup->signals = 0;
    setup->trigger = KVC_TRIGGER_OVER_CAPACITY;
    setup->trigger_size = c;
    setup->capacity = c;
    setup->use_rule = 1;
    kvc_rule& rule = setup->rule;
    rule.sink_size = a;
    rule.recent_size = w;
    rule.separator_size = s;
    rule.separator_ids = inst->separators.empty() ? nullptr : inst->separators.data();
    rule.n_separator_ids = inst->separators.size();
    rule.scope = KVC_SCOPE_SHARED;  // token-based: every head keeps the same entries
    *instance = inst;
    return 0;
  });
}

void destroy(void* instance) { delete static_cast<Instance*>(instance); }

const kvc_policy_descriptor kDescriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "sepllm",
    KVC_POLICY_VERSION, "SepLLM: sinks, recent separator tokens and a local window",
    kParams, sizeof kParams / sizeof kParams[0], create, destroy, nullptr, nullptr, nullptr};

}  // namespace

KVC_POLICY_DEFINE_ENTRY(kDescriptor)
