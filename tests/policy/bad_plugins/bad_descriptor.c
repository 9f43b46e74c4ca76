/* Broken plugins for the loader tests: one source, one defect per BAD_* definition. */
#include <stddef.h>

#include "kvc/policy.h"

static int create(const kvc_policy_host *host, const kvc_policy_value *values,
                  kvc_policy_setup *setup, void **instance) {
  (void)host;
  (void)values;
  setup->trigger = KVC_TRIGGER_NEVER;
  setup->capacity = -1;
  *instance = NULL;
  return 0;
}

#if !defined(BAD_NO_DESTROY)
static void destroy(void *instance) { (void)instance; }
#endif

#if defined(BAD_SCHEMA_DUPLICATE)
static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "size", KVC_PARAM_INT, "1", 0, 10, NULL, "a size"},
    {sizeof(kvc_param_info), "size", KVC_PARAM_INT, "2", 0, 10, NULL, "the same name again"}};
#elif defined(BAD_SCHEMA_DEFAULT)
static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "size", KVC_PARAM_INT, "20", 0, 10, NULL, "default out of range"}};
#elif defined(BAD_SCHEMA_RANGE)
static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "size", KVC_PARAM_INT, "5", 10, 0, NULL, "min above max"}};
#elif defined(BAD_SCHEMA_CHOICE)
static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "mode", KVC_PARAM_CHOICE, "a", 0, 0, NULL, "no choices"}};
#elif defined(BAD_SCHEMA_TYPE)
static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "size", (kvc_param_type)42, "1", 0, 10, NULL, "unknown type"}};
#else
static const kvc_param_info params[] = {
    {sizeof(kvc_param_info), "size", KVC_PARAM_INT, "1", 0, 10, NULL, "a size"}};
#endif

#if defined(BAD_NAME)
#define NAME "some_other_name"
#else
#define NAME PLUGIN_NAME
#endif

#if defined(BAD_ABI)
#define MAJOR 99
#else
#define MAJOR KVC_POLICY_ABI_MAJOR
#endif

static const kvc_policy_descriptor descriptor = {
    sizeof(kvc_policy_descriptor), MAJOR, KVC_POLICY_ABI_MINOR, NAME, "0.0.1",
    "a deliberately broken plugin", params, sizeof params / sizeof params[0], create,
#if defined(BAD_NO_DESTROY)
    NULL,
#else
    destroy,
#endif
    NULL, NULL, NULL};

#if defined(BAD_NO_ENTRY)
/* Exports something, just not the entry. */
KVC_POLICY_EXPORT const kvc_policy_descriptor *not_the_entry(void) { return &descriptor; }
#else
KVC_POLICY_EXPORT const kvc_policy_descriptor *kvc_policy_entry(uint32_t major, uint32_t minor) {
  (void)major;
  (void)minor;
#if defined(BAD_NULL_DESCRIPTOR)
  (void)descriptor;
  return NULL;
#else
  return &descriptor;
#endif
}
#endif
