/*
 * policy.h as released with ABI 1.0, frozen here so that a plugin built against it is tested
 * against every later host (tests/policy/old_plugin_test.cpp). Do not edit.
 *
 * policy.h — the ABI between libkvc and KV-cache eviction policy plugins.
 *
 * A policy is a shared object libkvc_policy_<name>.so that exports exactly one symbol,
 * kvc_policy_entry, returning a const descriptor. The engine owns memory, positions and the
 * signals; a policy only decides which cache entries survive. It can do so in two ways:
 *
 *  1. Declaratively: at create time it fills a kvc_rule ("protect the first `sink_size`, the
 *     last `recent_size`, the most recent `separator_size` separator tokens, and the top
 *     `heavy_size` of the middle by a signal"). The engine runs the rule itself (also on the
 *     GPU) and never calls back into the plugin. StreamingLLM, H2O, SepLLM and the unified
 *     policy are rules.
 *  2. With a callback: `decide` receives a read-only view of the cache (entries, positions,
 *     token ids and the signals asked for) and writes a plan (which ranks to keep or evict).
 *     The engine validates the plan (ranges, order, duplicates, budget) before applying it.
 *
 * Conventions: C99; every struct starts with `struct_size`; structs and the descriptor only
 * grow at the end (the ABI minor is bumped when they do); optional function pointers may be
 * NULL. Functions return 0 on success; on failure they call host->set_error() and return
 * nonzero. No C++ types or exceptions cross the boundary and no memory changes owner.
 * Threads: one instance is used by one session, from one thread at a time; different
 * instances may run concurrently, so plugins must not keep mutable global state.
 *
 * Ranks: entries of one (layer, head) cache are ordered by age, rank 0 being the oldest.
 *
 * See sdk/README.md for a walk-through and sdk/template/ for a complete plugin.
 */
#ifndef KVC_POLICY_H
#define KVC_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "kvc/kvc.h" /* kvc_param_type, kvc_param_info */

#ifdef __cplusplus
extern "C" {
#endif

#define KVC_POLICY_ABI_MAJOR 1
#define KVC_POLICY_ABI_MINOR 0
/* The one symbol a plugin exports. */
#define KVC_POLICY_ENTRY_SYMBOL "kvc_policy_entry"

#if defined(_WIN32)
#define KVC_POLICY_EXPORT __declspec(dllexport)
#else
#define KVC_POLICY_EXPORT __attribute__((visibility("default")))
#endif

/* ---- Signals: what the engine computes per (layer, head, entry) on request ---------------- */

/* Sum of the softmax probabilities an entry has received from every query since it entered
 * the cache (its own query included). fp32, reset when the entry is evicted. */
#define KVC_SIGNAL_ACC_ATTENTION (1u << 0)
/* The probability the entry received from the most recent query. */
#define KVC_SIGNAL_LAST_ATTENTION (1u << 1)
/* L2 norm of the entry's key (before rotary; rotation preserves it). */
#define KVC_SIGNAL_KEY_NORM (1u << 2)
/* Original positions and token ids are always available and need no flag. */

/* ---- When the engine consults the policy ------------------------------------------------- */
typedef enum kvc_trigger {
  KVC_TRIGGER_NEVER = 0,         /* never evicts (full cache) */
  KVC_TRIGGER_OVER_CAPACITY = 1, /* after a step that left more than trigger_size entries */
  KVC_TRIGGER_EVERY_STEP = 2     /* after every step (for policies with per-step state); one
                                    call per step, whatever its token count */
} kvc_trigger;

typedef enum kvc_scope {
  KVC_SCOPE_PER_HEAD = 0, /* each (layer, head) is ranked by its own signal */
  KVC_SCOPE_SHARED = 1    /* one set for every (layer, head): signal summed over heads and
                             over the rule's score_layers */
} kvc_scope;

/* ---- The declarative rule ---------------------------------------------------------------- */
/* When triggered, the engine keeps, in this priority order and without duplicates:
 *   1. ranks [0, sink_size);
 *   2. the last recent_size entries;
 *   3. among the rest (the "middle"), the most recent separator_size entries whose token id is
 *      one of separator_ids;
 *   4. among the remaining middle, the heavy_size entries with the largest heavy_signal
 *      (ties: the older entry first).
 * Everything else is evicted; survivors keep their age order. */
typedef struct kvc_rule {
  size_t struct_size;
  int64_t sink_size;
  int64_t recent_size;
  int64_t separator_size;
  const int32_t *separator_ids; /* must stay valid until destroy */
  size_t n_separator_ids;
  int64_t heavy_size;
  uint32_t heavy_signal; /* one KVC_SIGNAL_* flag, when heavy_size > 0 */
  kvc_scope scope;
  const int32_t *score_layers; /* SHARED: layers whose signal is summed; NULL/0 = all layers */
  size_t n_score_layers;
} kvc_rule;

/* ---- Create: parameters in, setup out ---------------------------------------------------- */

/* A parameter value, parsed and range-checked by the engine against the plugin's schema.
 * Passed as an array (one per schema entry), so this struct is frozen for ABI major 1. */
typedef struct kvc_policy_value {
  int64_t i;                   /* INT, BOOL (0/1), CHOICE (index into the choices) */
  double f;                    /* FLOAT */
  const int64_t *ints;         /* INT_LIST */
  size_t n_ints;
  const char *const *strings;  /* STRING_LIST; CHOICE: strings[0] is the chosen text */
  size_t n_strings;
} kvc_policy_value;

/* Services the engine offers a plugin. When a policy is only being checked without a model
 * (kvc_policy_check), n_layers, n_heads, vocab_size and max_position_embeddings are 0 and
 * tokenize returns -1: skip model-dependent checks then (they run again at session start). */
typedef struct kvc_policy_host {
  size_t struct_size;
  void *host_data;
  int32_t n_layers;
  int32_t n_heads;
  int32_t vocab_size;
  int32_t max_position_embeddings;
  /* Token ids of `text` under the model's tokenizer. Returns the count (ids written up to
   * `capacity`), or -1 when the model has no tokenizer. */
  int64_t (*tokenize)(void *host_data, const char *text, int32_t *ids, size_t capacity);
  /* Sets the message reported for the failing call. */
  void (*set_error)(void *host_data, const char *message);
} kvc_policy_host;

/* What a new instance tells the engine about itself. */
typedef struct kvc_policy_setup {
  size_t struct_size;
  uint32_t signals;      /* KVC_SIGNAL_* the policy reads */
  kvc_trigger trigger;
  int64_t trigger_size;  /* OVER_CAPACITY: consult when a (layer, head) exceeds this */
  /* Most entries a (layer, head) may hold after a decision, and so between steps (the engine
   * sizes the cache for capacity plus one step's tokens); -1 none. Plans that would leave
   * more are rejected. OVER_CAPACITY needs trigger_size <= capacity. */
  int64_t capacity;
  int32_t use_rule;      /* nonzero: the engine executes `rule`; decide is never called */
  kvc_rule rule;
} kvc_policy_setup;

/* ---- Decide: view in, plan out ----------------------------------------------------------- */

/* One (layer, head) cache, oldest entry first. Signal arrays are NULL unless requested.
 * Passed as an array, so this struct is frozen for ABI major 1: new per-entry data will come
 * as new arrays appended to kvc_cache_view. */
typedef struct kvc_head_view {
  int64_t n_entries;
  const int64_t *positions; /* original position in the text (0-based since reset) */
  const int32_t *token_ids;
  const float *acc_attention;
  const float *last_attention;
  const float *key_norms;
} kvc_head_view;

typedef struct kvc_cache_view {
  size_t struct_size;
  int32_t n_layers;
  int32_t n_heads;
  int64_t n_tokens_seen; /* tokens appended since reset, this step's included */
  int64_t n_new;         /* tokens appended by this step (1 when decoding) */
  const kvc_head_view *heads; /* [n_layers * n_heads]; index layer * n_heads + head */
} kvc_cache_view;

typedef enum kvc_plan_kind {
  KVC_PLAN_NOTHING = 0, /* keep everything */
  KVC_PLAN_KEEP = 1,    /* the listed ranks survive */
  KVC_PLAN_EVICT = 2    /* the listed ranks are removed */
} kvc_plan_kind;

/* The engine provides the buffers; the policy fills them. Lists are strictly increasing
 * ranks. With shared != 0 only list 0 is used, for every (layer, head) (their entries must be
 * identical, as they are when a policy only ever makes shared plans). */
typedef struct kvc_plan {
  size_t struct_size;
  kvc_plan_kind kind; /* set by the policy; starts as KVC_PLAN_NOTHING */
  int32_t shared;     /* set by the policy */
  int32_t *ranks;     /* list h starts at ranks + h * stride */
  int64_t stride;     /* room per list (>= the largest n_entries) */
  int64_t *counts;    /* counts[h]: length of list h; [n_layers * n_heads] */
} kvc_plan;

/* ---- The descriptor ---------------------------------------------------------------------- */

typedef struct kvc_policy_descriptor {
  size_t struct_size;
  uint32_t abi_major; /* KVC_POLICY_ABI_MAJOR the plugin was built with */
  uint32_t abi_minor;
  const char *name;   /* [a-z0-9_]+, equal to <name> in libkvc_policy_<name>.so */
  const char *version;
  const char *description;
  /* The parameter schema. Entries are read with a stride of params[0].struct_size (all equal),
   * so kvc_param_info may grow without breaking older hosts. */
  const kvc_param_info *params;
  size_t n_params;

  /* values: one per schema entry, in schema order, defaults filled in. The host fills
   * `setup` with zeros (struct_size set, capacity -1) before the call. On failure (e.g.
   * parameters that do not fit together) call host->set_error and return nonzero; the
   * session then fails with KVC_ERR_INVALID_ARGUMENT and that message. */
  int (*create)(const kvc_policy_host *host, const kvc_policy_value *values,
                kvc_policy_setup *setup, void **instance);
  void (*destroy)(void *instance);
  /* Optional: forget per-text state (the cache was emptied). */
  int (*reset)(void *instance);
  /* Required unless every setup uses a rule. */
  int (*decide)(void *instance, const kvc_cache_view *view, kvc_plan *plan);
  /* Optional, for extensions by string id with a version suffix ("kvc.foo/1"); NULL if unknown. */
  const void *(*get_extension)(void *instance, const char *id);
} kvc_policy_descriptor;

/* The entry symbol's type. The host passes its own ABI version; a plugin may return NULL if
 * it cannot work with that host. */
typedef const kvc_policy_descriptor *(*kvc_policy_entry_fn)(uint32_t host_abi_major,
                                                             uint32_t host_abi_minor);

#ifdef __cplusplus
}
#endif

#endif /* KVC_POLICY_H */
