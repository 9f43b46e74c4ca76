/* A plugin written against policy ABI 1.0 (the frozen header beside it): H2O as a 1.0 rule,
 * or, with the parameter callback = true, the same selection as a 1.0 decide callback. Every
 * later host must load it and run it exactly as then (tests/policy/old_plugin_test.cpp). */
#include <stdlib.h>
#include <string.h>

#include "kvc/policy.h"

#if KVC_POLICY_ABI_MINOR != 0
#error "old_h2o.c must be compiled against the ABI 1.0 header in tests/policy/abi_1_0"
#endif

typedef struct {
  int64_t sink, recent, heavy;
  float *score; /* scratch for decide */
  int32_t *order;
  size_t room;
} instance;

static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "start_size", KVC_PARAM_INT, "4", 0, 1e9, NULL, "sinks"},
    {sizeof(kvc_param_info), "recent_size", KVC_PARAM_INT, "252", 0, 1e9, NULL, "window"},
    {sizeof(kvc_param_info), "heavy_size", KVC_PARAM_INT, "128", 0, 1e9, NULL, "heavy hitters"},
    {sizeof(kvc_param_info), "callback", KVC_PARAM_BOOL, "false", 0, 1, NULL,
     "decide in a callback instead of a rule"},
};

static int create(const kvc_policy_host *host, const kvc_policy_value *v,
                  kvc_policy_setup *setup, void **out) {
  instance *in = calloc(1, sizeof *in);
  if (in == NULL) {
    host->set_error(host->host_data, "out of memory");
    return 1;
  }
  in->sink = v[0].i;
  in->recent = v[1].i;
  in->heavy = v[2].i;
  setup->signals = KVC_SIGNAL_ACC_ATTENTION;
  setup->trigger = KVC_TRIGGER_OVER_CAPACITY;
  setup->trigger_size = in->sink + in->recent + in->heavy;
  setup->capacity = setup->trigger_size;
  if (!v[3].i) {
    setup->use_rule = 1;
    setup->rule.sink_size = in->sink;
    setup->rule.recent_size = in->recent;
    setup->rule.heavy_size = in->heavy;
    setup->rule.heavy_signal = KVC_SIGNAL_ACC_ATTENTION;
    setup->rule.scope = KVC_SCOPE_PER_HEAD;
  }
  *out = in;
  return 0;
}

static void destroy(void *p) {
  instance *in = p;
  if (in == NULL) return;
  free(in->score);
  free(in->order);
  free(in);
}

/* Per head over capacity: sinks, window, and the heavy middle entries by accumulated attention
 * (ties: the older entry), by selection sort: slow and plain, as a reference should be. */
static int decide(void *p, const kvc_cache_view *view, kvc_plan *plan) {
  instance *in = p;
  const int64_t capacity = in->sink + in->recent + in->heavy;
  int64_t g;
  plan->kind = KVC_PLAN_KEEP;
  plan->shared = 0;
  for (g = 0; g < (int64_t)view->n_layers * view->n_heads; ++g) {
    const kvc_head_view *h = &view->heads[g];
    int32_t *list = plan->ranks + g * plan->stride;
    const int64_t n = h->n_entries;
    int64_t r, k, count = 0, mid_end = n - in->recent;
    if ((size_t)n > in->room) {
      free(in->score);
      free(in->order);
      in->score = malloc(sizeof(float) * (size_t)n);
      in->order = malloc(sizeof(int32_t) * (size_t)n);
      in->room = (size_t)n;
      if (in->score == NULL || in->order == NULL) return 1;
    }
    if (n <= capacity) {
      for (r = 0; r < n; ++r) list[r] = (int32_t)r;
      plan->counts[g] = n;
      continue;
    }
    memset(in->order, 0, sizeof(int32_t) * (size_t)n); /* 1 = kept */
    for (r = 0; r < in->sink; ++r) in->order[r] = 1;
    for (r = mid_end; r < n; ++r) in->order[r] = 1;
    for (k = 0; k < in->heavy; ++k) {
      int64_t best = -1;
      for (r = in->sink; r < mid_end; ++r)
        if (!in->order[r] && (best < 0 || h->acc_attention[r] > h->acc_attention[best])) best = r;
      if (best < 0) break;
      in->order[best] = 1;
    }
    for (r = 0; r < n; ++r)
      if (in->order[r]) list[count++] = (int32_t)r;
    plan->counts[g] = count;
  }
  return 0;
}

static const kvc_policy_descriptor descriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "old_h2o", "1.0.0",
    "H2O written against policy ABI 1.0", params, sizeof params / sizeof params[0], create,
    destroy, NULL, decide, NULL};

KVC_POLICY_EXPORT const kvc_policy_descriptor *kvc_policy_entry(uint32_t major, uint32_t minor) {
  (void)minor;
  return major == KVC_POLICY_ABI_MAJOR ? &descriptor : NULL;
}
