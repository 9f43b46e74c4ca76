/*
 * policy.h — the ABI between libkvc and KV-cache eviction policy plugins.
 *
 * A policy is a shared object libkvc_policy_<name>.so that exports exactly one symbol,
 * kvc_policy_entry, returning a const descriptor. The engine owns memory, positions, the
 * signals and the selection; a policy says what to keep, in one of two ways:
 *
 *  1. Declaratively (a rule, the usual way): at create time it fills a kvc_rule: "protect the
 *     first `sink_size`, the last `recent_size` and the most recent `separator_size` separator
 *     tokens, and keep the best `heavy_size` of the rest by a signal". The engine runs the rule
 *     itself, with its one top-k selection (kvc/selection.hpp), and never calls back into the
 *     plugin. The rule is data, so the engine can run it layer by layer, batched, or on a
 *     device; today the engine runs rules on the host for every backend. StreamingLLM, H2O,
 *     lazy H2O, SepLLM and the unified policy are rules.
 *  2. With a callback: `decide` receives a read-only view of the cache (entries, positions,
 *     token ids and the signals asked for) and writes a plan (which ranks to keep or evict).
 *     The engine validates the plan (ranges, order, duplicates, budget) before applying it.
 *
 * Conventions: C99; every struct starts with `struct_size`; structs and the descriptor only
 * grow at the end (the ABI minor is bumped when they do; zero in a new field always means the
 * older behaviour, so a plugin built against an older minor keeps working); optional function
 * pointers may be NULL. Functions return 0 on success; on failure they call host->set_error()
 * and return nonzero. No C++ types or exceptions cross the boundary and no memory changes
 * owner.
 *
 * Threads (each function says which applies):
 *   [any-thread]     may be called from several threads at once;
 *   [session-thread] called from the thread that is using the session that owns the instance,
 *                    one call at a time per instance. Different instances (sessions) may run
 *                    concurrently, so plugins must not keep mutable global state.
 *
 * One step of a session (kvc_session_step), in this order:
 *   1. attend: the step's tokens are appended to every (layer, head) cache and attend over it;
 *      the model's logits for the step are computed (eviction never affects them);
 *   2. signals: the engine updates the signals the policy asked for (accumulated and last
 *      attention, key norms) from this step's attention, and counts the step (the lazy
 *      refresh counter of a rule sees every step, also those that evict nothing);
 *   3. decide: if the trigger fires, the engine runs the rule, or calls `decide` and validates
 *      the plan, and then applies it to the cache.
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
#define KVC_POLICY_ABI_MINOR 1
/* The one symbol a plugin exports. */
#define KVC_POLICY_ENTRY_SYMBOL "kvc_policy_entry"

#if defined(_WIN32)
#define KVC_POLICY_EXPORT __declspec(dllexport)
#else
#define KVC_POLICY_EXPORT __attribute__((visibility("default")))
#endif

/* ---- Signals: what the engine computes per (layer, head, entry) on request ---------------- */
/* A policy asks for signals in setup.signals; the engine maintains only those, in fp32, and
 * they stay with their entry until it is evicted. */

/* Sum of the softmax probabilities an entry has received from every query since it entered
 * the cache (its own query included). Reset when the entry is evicted. (H2O) */
#define KVC_SIGNAL_ACC_ATTENTION (1u << 0)
/* The probability the entry received from the most recent query; after a multi-token step,
 * from the step's last query. (TOVA) */
#define KVC_SIGNAL_LAST_ATTENTION (1u << 1)
/* L2 norm of the entry's key (before rotary; rotation preserves it). (KNorm: rank it with
 * KVC_ORDER_SMALLEST) */
#define KVC_SIGNAL_KEY_NORM (1u << 2)
/* ABI minor 1: */
/* The mean, over the last rule.signal_window queries (the current one included), of the
 * probability each gave the entry: the sum of what they gave it divided by the window. A
 * query that did not see the entry (it came before it) gives 0. (SnapKV, PyramidKV) */
#define KVC_SIGNAL_WINDOW_ATTENTION (1u << 3)
/* Cosine similarity between the entry's key (before rotary) and the mean of the unit-length
 * keys of every entry now in its (layer, head) cache, computed when a decision is made.
 * (KeyDiff: rank it with KVC_ORDER_SMALLEST) */
#define KVC_SIGNAL_KEY_MEAN_COSINE (1u << 4)
/* How many of the last rule.signal_window queries (the current one included) gave the entry
 * at least 1 / (number of keys that query attended), i.e. at least uniform. (Scissorhands) */
#define KVC_SIGNAL_PIVOTAL_COUNT (1u << 5)
/* Original positions and token ids are always available and need no flag. */

/* ---- When the engine consults the policy ------------------------------------------------- */
typedef enum kvc_trigger {
  KVC_TRIGGER_NEVER = 0,         /* never evicts (full cache) */
  KVC_TRIGGER_OVER_CAPACITY = 1, /* after a step that left more than trigger_size entries */
  KVC_TRIGGER_EVERY_STEP = 2     /* after every step (for policies with per-step state); one
                                    call per step, whatever its token count */
} kvc_trigger;

/* What one selection covers (a "group"). */
typedef enum kvc_scope {
  KVC_SCOPE_PER_HEAD = 0, /* each (layer, head) is ranked by its own signal */
  KVC_SCOPE_SHARED = 1,   /* one set for every (layer, head): the signal summed over the
                             rule's score_layers and their heads */
  KVC_SCOPE_PER_LAYER = 2 /* ABI minor 1: one set per layer, the signal averaged over the
                             layer's heads (TOVA's default) */
} kvc_scope;

/* ABI minor 1: which end of the heavy signal is kept. */
typedef enum kvc_order {
  KVC_ORDER_LARGEST = 0, /* the largest values (attention scores) */
  KVC_ORDER_SMALLEST = 1 /* the smallest values (key norms, key-to-mean cosine) */
} kvc_order;

/* ABI minor 1: how a heavy budget is split between the heads of a layer. */
typedef enum kvc_allocation {
  KVC_ALLOCATION_UNIFORM = 0, /* every head keeps its own heavy budget */
  KVC_ALLOCATION_ADAPTIVE = 1 /* Ada-KV: each head keeps its own best floor(allocation_floor *
                                 H) heavy candidates, and the layer's remaining n_heads * H
                                 minus those go to the best scores pooled over its heads (ties:
                                 the smaller original position, then the lower head). Heads
                                 then hold different numbers of entries. PER_HEAD scope only. */
} kvc_allocation;

/* ABI minor 1: smoothing of the heavy signal before ranking (SnapKV). */
typedef enum kvc_pooling {
  KVC_POOLING_NONE = 0,
  KVC_POOLING_AVG = 1, /* the sum over the pool_kernel neighbours centred on the entry, in
                          rank order within the middle (others count 0), divided by pool_kernel */
  KVC_POOLING_MAX = 2  /* the largest of those neighbours that lie in the middle */
} kvc_pooling;

/* ---- The declarative rule ---------------------------------------------------------------- */
/* When a group (see kvc_scope) is over its size, the engine keeps, in this priority order and
 * without duplicates:
 *   1. ranks [0, sink_size);
 *   2. the last recent_size entries;
 *   3. among the rest (the "middle"), the most recent separator_size entries whose token id is
 *      one of separator_ids;
 *   4. among the remaining middle (the heavy candidates), the heavy_size entries that rank best
 *      by heavy_signal in heavy_order (then by tie_signal, largest first, then the older entry:
 *      the order of kvc/selection.hpp).
 * Everything else is evicted; survivors keep their age order.
 *
 * A group is over its size when it holds more than setup.trigger_size entries (a larger
 * trigger_size than the keep count gives SepLLM's bursts). With layer_heavy_sizes, layer l's
 * groups are over when they hold more than sink + recent + separator + layer_heavy_sizes[l];
 * with ADAPTIVE allocation, when the layer's heads together hold more than n_heads times that.
 *
 * Fields marked "minor 1" are zero in a plugin built against ABI minor 0, which gives the
 * minor-0 behaviour. */
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
  /* ---- minor 1 ---- */
  /* Lazy refresh (the seed's lazy H2O): 0 selects fully whenever a group is over its size.
   * N > 0: the engine counts every step, from 1 after a reset. On steps whose count is a
   * multiple of N, and after any multi-token step, the full selection runs and its heavy
   * entries become the group's protected set. On the other steps a group over its size drops
   * its oldest unprotected heavy candidates, then its oldest protected ones, until it is back
   * at the size the last full selection left it with. */
  int64_t update_interval;
  kvc_order heavy_order;
  uint32_t tie_signal;     /* 0 or one KVC_SIGNAL_*: ranks equal heavy scores, largest first */
  int64_t signal_window;   /* queries covered by WINDOW_ATTENTION and PIVOTAL_COUNT (>= 1) */
  kvc_pooling pooling;
  int64_t pool_kernel;     /* odd, >= 1, with pooling */
  /* NULL, or one heavy budget per layer (n_layer_heavy_sizes == the model's n_layers), used
   * instead of heavy_size (PyramidKV). Must stay valid until destroy. */
  const int64_t *layer_heavy_sizes;
  size_t n_layer_heavy_sizes;
  kvc_allocation allocation;
  double allocation_floor; /* ADAPTIVE: in [0, 1] */
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
  /* ---- minor 1 (check struct_size before calling) ---- */
  /* Records a note on how the policy resolved its parameters, e.g. which separator strings it
   * dropped; the engine lists the notes in the session's policy report (and so in results). */
  void (*note)(void *host_data, const char *message);
} kvc_policy_host;

/* What a new instance tells the engine about itself. `rule` is the last member and only grows
 * at its end, so this struct never gains fields after it. */
typedef struct kvc_policy_setup {
  size_t struct_size;
  uint32_t signals;      /* KVC_SIGNAL_* the policy reads (a rule's heavy and tie signals) */
  kvc_trigger trigger;   /* a rule: OVER_CAPACITY (or NEVER) */
  int64_t trigger_size;  /* OVER_CAPACITY: consult when a (layer, head) exceeds this */
  /* Most entries a (layer, head) may hold after a decision, and so between steps; -1 none.
   * Plans that would leave more are rejected. OVER_CAPACITY needs trigger_size <= capacity.
   * A rule's capacity must cover its largest keep count (with ADAPTIVE allocation, what one
   * head may take of its layer's pool), or be -1. */
  int64_t capacity;
  int32_t use_rule;      /* nonzero: the engine executes `rule`; decide is never called */
  kvc_rule rule;
} kvc_policy_setup;

/* ---- Decide: view in, plan out ----------------------------------------------------------- */

/* One (layer, head) cache, oldest entry first. Signal arrays are NULL unless requested.
 * Passed as an array, so this struct is frozen for ABI major 1: newer per-entry data comes as
 * arrays appended to kvc_cache_view. */
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
  /* ---- minor 1: the newer signals, [n_layers * n_heads] arrays of n_entries floats each,
   * indexed like heads; a NULL pointer (or, in a view from a minor-0 host, a struct_size that
   * ends before the field) means the signal was not requested. ---- */
  const float *const *window_attention;
  const float *const *key_mean_cosine;
  const float *const *pivotal_count;
  /* The model layer of the view's first layer: 0 in a view of the whole cache; the layer
   * itself in the one-layer views given to a layer-local callback (KVC_EXTENSION_LAYER_LOCAL). */
  int32_t first_layer;
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

  /* [session-thread] values: one per schema entry, in schema order, defaults filled in. The
   * host fills `setup` with zeros (struct_size set, capacity -1) before the call. On failure
   * (e.g. parameters that do not fit together) call host->set_error and return nonzero; the
   * session then fails with KVC_ERR_INVALID_ARGUMENT and a message naming the plugin file,
   * "create" and yours. `host` stays valid until destroy. */
  int (*create)(const kvc_policy_host *host, const kvc_policy_value *values,
                kvc_policy_setup *setup, void **instance);
  /* [session-thread] */
  void (*destroy)(void *instance);
  /* [session-thread] Optional: forget per-text state (the cache was emptied). */
  int (*reset)(void *instance);
  /* [session-thread] Required unless every setup uses a rule. Called after step 2 of the
   * step order above when the trigger fires. A nonzero return fails the step with
   * KVC_ERR_POLICY naming the plugin file, "decide" and your message; the cache is left as
   * it was. */
  int (*decide)(void *instance, const kvc_cache_view *view, kvc_plan *plan);
  /* [session-thread] Optional, for extensions by string id with a version suffix
   * ("kvc.foo/1"); NULL if unknown. */
  const void *(*get_extension)(void *instance, const char *id);
} kvc_policy_descriptor;

/* ---- Extensions (get_extension) ---------------------------------------------------------- */

/* A callback policy whose plan for a layer depends only on that layer's entries and signals and
 * on the step (not on other layers) returns a non-NULL pointer for this id. The engine may then
 * call decide with a view of one layer (n_layers 1, first_layer set) after that layer has run,
 * which lets it score a block of tokens layer by layer with token-by-token results
 * (kvc_score_options.block_size). Without it, a callback policy is scored token by token. */
#define KVC_EXTENSION_LAYER_LOCAL "kvc.layer_local/1"

/* The entry symbol's type. [any-thread] The host passes its own ABI version; a plugin may
 * return NULL if it cannot work with that host. The descriptor must stay valid and unchanged
 * while the plugin is loaded (the engine never unloads a plugin). */
typedef const kvc_policy_descriptor *(*kvc_policy_entry_fn)(uint32_t host_abi_major,
                                                             uint32_t host_abi_minor);

#ifdef __cplusplus
}
#endif

#endif /* KVC_POLICY_H */
