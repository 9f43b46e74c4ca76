/* A callback plugin that returns whatever plan its `mode` parameter asks for, valid or not,
 * and a setup chosen by `setup`; for the plan and setup validation tests.
 * Every head holds L entries; the plan is built for `keep` = capacity entries. */
#include <stddef.h>
#include <string.h>

#include "kvc/policy.h"

static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "mode", KVC_PARAM_CHOICE, "good", 0, 0,
     "good|out_of_range|duplicate|unsorted|over_budget|bad_kind|fail|shared_mismatch",
     "what decide returns"},
    {sizeof(kvc_param_info), "setup", KVC_PARAM_CHOICE, "ok", 0, 0,
     "ok|bad_trigger|heavy_without_signal|capacity_below_rule|negative_size|no_decide|refuse",
     "what create returns"},
    {sizeof(kvc_param_info), "capacity", KVC_PARAM_INT, "4", 1, 1000, NULL, "capacity"},
};

typedef struct instance {
  const kvc_policy_host *host;
  int mode;
  int64_t capacity;
  int decisions;
} instance;

static instance instances[64]; /* no allocator needed; tests create only a few */
static int n_instances;

static int create(const kvc_policy_host *host, const kvc_policy_value *v,
                  kvc_policy_setup *setup, void **out) {
  const char *s = v[1].strings[0];
  instance *inst = &instances[n_instances++ % 64];
  inst->host = host;
  inst->mode = (int)v[0].i;
  inst->capacity = v[2].i;
  inst->decisions = 0;
  setup->signals = 0;
  setup->trigger = KVC_TRIGGER_EVERY_STEP;
  setup->capacity = inst->capacity;
  setup->trigger_size = inst->capacity;
  setup->use_rule = 0;
  if (strcmp(s, "bad_trigger") == 0) setup->trigger = (kvc_trigger)7;
  if (strcmp(s, "heavy_without_signal") == 0) {
    setup->use_rule = 1;
    setup->rule.heavy_size = 1;
    setup->rule.heavy_signal = KVC_SIGNAL_ACC_ATTENTION;
  }
  if (strcmp(s, "capacity_below_rule") == 0) {
    setup->use_rule = 1;
    setup->rule.sink_size = inst->capacity;
    setup->rule.recent_size = 1;
  }
  if (strcmp(s, "negative_size") == 0) {
    setup->use_rule = 1;
    setup->rule.recent_size = -1;
  }
  if (strcmp(s, "refuse") == 0) {
    host->set_error(host->host_data, "this plugin refuses: setup=refuse");
    return 1;
  }
  *out = inst;
  return 0;
}

static void destroy(void *p) { (void)p; }

static int decide(void *p, const kvc_cache_view *view, kvc_plan *plan) {
  instance *inst = (instance *)p;
  const int64_t groups = (int64_t)view->n_layers * view->n_heads;
  int64_t g, i;
  inst->decisions++;
  if (view->heads[0].n_entries <= inst->capacity) return 0;
  if (inst->mode == 6) {
    inst->host->set_error(inst->host->host_data, "decide failed on purpose");
    return 1;
  }
  plan->kind = KVC_PLAN_KEEP;
  plan->shared = inst->mode == 7;
  for (g = 0; g < groups; ++g) {
    const int64_t L = view->heads[g].n_entries;
    int32_t *r = plan->ranks + g * plan->stride;
    int64_t n = inst->capacity;
    for (i = 0; i < n; ++i) r[i] = (int32_t)(L - n + i); /* the last `capacity` entries */
    switch (inst->mode) {
      case 1: r[n - 1] = (int32_t)L; break;         /* out of range */
      case 2: r[1] = r[0]; break;                    /* duplicate */
      case 3: { int32_t t = r[0]; r[0] = r[1]; r[1] = t; } break; /* unsorted */
      case 4: r[n] = (int32_t)(L - n - 1); n += 1;   /* over budget: one more, kept sorted */
        for (i = n - 1; i > 0; --i) { int32_t t = r[i]; r[i] = r[i - 1]; r[i - 1] = t; }
        break;
      case 5: plan->kind = (kvc_plan_kind)9; break;  /* unknown kind */
      default: break;
    }
    plan->counts[g] = n;
  }
  return 0;
}

static const kvc_policy_descriptor descriptor = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "bad_plan",
    "0.0.1", "returns the plans it is told to", params, sizeof params / sizeof params[0],
    create, destroy, NULL, decide, NULL};

static const kvc_policy_descriptor descriptor_no_decide = {
    sizeof(kvc_policy_descriptor), KVC_POLICY_ABI_MAJOR, KVC_POLICY_ABI_MINOR, "no_decide",
    "0.0.1", "a callback setup without decide", params, sizeof params / sizeof params[0],
    create, destroy, NULL, NULL, NULL};

KVC_POLICY_EXPORT const kvc_policy_descriptor *kvc_policy_entry(uint32_t major, uint32_t minor) {
  (void)major;
  (void)minor;
#ifdef NO_DECIDE
  (void)descriptor;
  return &descriptor_no_decide;
#else
  (void)descriptor_no_decide;
  return &descriptor;
#endif
}
