/*
 * kvc.h — the public C ABI of libkvc: GPT-NeoX (Pythia) inference with KV-cache eviction.
 *
 * Conventions (they hold for every function below):
 *  - C99. Opaque handles; no C++ types, exceptions or ownership transfers of library memory.
 *  - Every function that can fail returns a kvc_status. On failure, kvc_last_error() returns a
 *    message for the calling thread that names the file, tensor, key or value involved and what
 *    was expected. The message stays valid until the next failing call on that thread.
 *  - Every struct passed in or out starts with `size_t struct_size`, set by the caller to
 *    sizeof(the struct): use the *_init macros, which call *_init_size(p, sizeof *p) so the
 *    library writes defaults into exactly the caller's struct. Structs only grow at the end,
 *    so a caller built against an older header keeps working with a newer library (and the
 *    exported *_init functions of ABI 1.0, which FFI callers may still call, fill only the
 *    1.0 layout). FFI callers with their own struct layouts call *_init_size.
 *  - Output buffers are caller-owned. Where a result's size is not known in advance, the
 *    function reports the needed size and returns KVC_ERR_BUFFER_TOO_SMALL if it does not fit.
 *  - Threads: a kvc_model may be shared by any number of threads and sessions at once (it is
 *    immutable after load). A kvc_session must be used by one thread at a time.
 *  - Lifetime: free every session of a model before freeing the model.
 *
 * A minimal program:
 *
 *     kvc_model *model; kvc_session *session;
 *     if (kvc_model_load("models/kjv-mini", NULL, &model) != KVC_OK) {
 *       fprintf(stderr, "%s\n", kvc_last_error()); return 1;
 *     }
 *     kvc_session_options so; kvc_session_options_init(&so);
 *     so.policy = "streaming";
 *     kvc_param params[] = {{"start_size", "4"}, {"recent_size", "252"}};
 *     so.params = params; so.n_params = 2;
 *     kvc_session_create(model, &so, &session);
 *     ... kvc_tokenize(kvc_model_tokenizer(model), ...); kvc_session_score(session, ...) ...
 *     kvc_session_free(session); kvc_model_free(model);
 */
#ifndef KVC_KVC_H
#define KVC_KVC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KVC_API __declspec(dllexport)
#else
#define KVC_API __attribute__((visibility("default")))
#endif

/* ---------------------------------------------------------------------------------------------
 * Versions and errors
 * ------------------------------------------------------------------------------------------- */

/* The ABI major changes on any incompatible change; the minor when something is appended. */
#define KVC_ABI_VERSION_MAJOR 1
#define KVC_ABI_VERSION_MINOR 2

/* (major << 16) | minor of the loaded library. Compare the major with KVC_ABI_VERSION_MAJOR. */
KVC_API uint32_t kvc_abi_version(void);
/* Human-readable library version, e.g. "0.1.0". Static storage. */
KVC_API const char *kvc_version_string(void);

typedef enum kvc_status {
  KVC_OK = 0,
  KVC_ERR_INVALID_ARGUMENT = 1, /* a NULL handle, a bad option value, a bad token id, ... */
  KVC_ERR_IO = 2,               /* a file or folder could not be opened or read */
  KVC_ERR_FORMAT = 3,           /* a file is malformed (JSON, safetensors, TOML, tokenizer) */
  KVC_ERR_UNSUPPORTED = 4,      /* valid input that kvc does not support (architecture, dtype) */
  KVC_ERR_NOT_FOUND = 5,        /* a named thing does not exist (policy, tensor, backend) */
  KVC_ERR_OUT_OF_RANGE = 6,     /* a value outside its allowed range (token id, position) */
  KVC_ERR_BUFFER_TOO_SMALL = 7, /* the caller's output buffer is too small; size reported */
  KVC_ERR_POLICY = 8,           /* a policy plugin failed or returned an invalid plan */
  KVC_ERR_BACKEND = 9,          /* the compute backend failed (e.g. a CUDA error) */
  KVC_ERR_OUT_OF_MEMORY = 10,
  KVC_ERR_INTERNAL = 11
} kvc_status;

/* The calling thread's message for its last failed call ("" if none). Never NULL. */
KVC_API const char *kvc_last_error(void);
/* Stable name of a status, e.g. "KVC_ERR_FORMAT". Never NULL. */
KVC_API const char *kvc_status_name(kvc_status status);

/* ---------------------------------------------------------------------------------------------
 * Tokenizer (Hugging Face tokenizer.json, byte-level BPE)
 * ------------------------------------------------------------------------------------------- */

typedef struct kvc_tokenizer kvc_tokenizer;

/* Loads a tokenizer.json file. Free with kvc_tokenizer_free. */
KVC_API kvc_status kvc_tokenizer_load(const char *path, kvc_tokenizer **out);
KVC_API void kvc_tokenizer_free(kvc_tokenizer *tokenizer);

/* Encodes UTF-8 text (no special tokens are added). Invalid UTF-8 is decoded with U+FFFD
 * replacement, like Python's bytes.decode("utf-8", errors="replace"). Writes at most
 * `capacity` ids; `*n_ids` receives the number of ids of the encoding (also when
 * KVC_ERR_BUFFER_TOO_SMALL is returned, so a caller can retry with a larger buffer). */
KVC_API kvc_status kvc_tokenize(const kvc_tokenizer *tokenizer, const char *text,
                                size_t text_len, int32_t *ids, size_t capacity, size_t *n_ids);

/* Decodes ids to UTF-8 text (not NUL-terminated unless room is left; `*text_len` is the
 * length without a terminator). Same buffer protocol as kvc_tokenize. */
KVC_API kvc_status kvc_detokenize(const kvc_tokenizer *tokenizer, const int32_t *ids,
                                  size_t n_ids, char *text, size_t capacity, size_t *text_len);

/* Number of ids the tokenizer can produce (highest id + 1). */
KVC_API int32_t kvc_tokenizer_vocab_size(const kvc_tokenizer *tokenizer);
/* Id of an exact token string (as it appears in the vocabulary), or -1. */
KVC_API int32_t kvc_tokenizer_token_to_id(const kvc_tokenizer *tokenizer, const char *token);

/* ---------------------------------------------------------------------------------------------
 * Model
 * ------------------------------------------------------------------------------------------- */

typedef struct kvc_model kvc_model;

typedef enum kvc_backend {
  KVC_BACKEND_AUTO = 0, /* CUDA if a usable GPU and the CUDA backend are present, else CPU */
  KVC_BACKEND_CPU = 1,
  KVC_BACKEND_CUDA = 2
} kvc_backend;

typedef enum kvc_dtype {
  KVC_DTYPE_AUTO = 0, /* the backend's default: float32 on the CPU, float16 on CUDA */
  KVC_DTYPE_F32 = 1,
  KVC_DTYPE_BF16 = 2,
  KVC_DTYPE_F16 = 3
} kvc_dtype;

typedef struct kvc_model_options {
  size_t struct_size;
  kvc_backend backend;
  kvc_dtype weight_dtype; /* weights are converted to this while loading */
  int32_t n_threads;      /* CPU worker threads, at most 4096; 0 = one per core */
  int32_t device;         /* CUDA device ordinal */
  uint64_t seed;          /* weights of "synthetic:" models */
} kvc_model_options;

/* Fills the defaults (ABI 1.0 layout for the exported function; see the conventions). */
KVC_API void kvc_model_options_init(kvc_model_options *options);
KVC_API void kvc_model_options_init_size(kvc_model_options *options, size_t struct_size);
#define kvc_model_options_init(options) \
  kvc_model_options_init_size((options), sizeof *(options))

/* Loads a model.
 *  - A Hugging Face folder: config.json plus model.safetensors, or shards listed in
 *    model.safetensors.index.json. A tokenizer.json in the folder is loaded too.
 *  - "synthetic:pythia-70m" ... "synthetic:pythia-12b": the exact Pythia shapes with random
 *    weights from options->seed; no files, no tokenizer. For benchmarks.
 * `options` may be NULL for defaults. */
KVC_API kvc_status kvc_model_load(const char *path, const kvc_model_options *options,
                                  kvc_model **out);
KVC_API void kvc_model_free(kvc_model *model);

typedef struct kvc_model_info {
  size_t struct_size;
  int32_t n_layers;
  int32_t n_heads;
  int32_t head_dim;
  int32_t hidden_size;
  int32_t intermediate_size;
  int32_t vocab_size; /* rows of the output matrix (padded, e.g. 50304 for Pythia) */
  int32_t max_position_embeddings;
  int32_t rotary_ndims;
  float rotary_base;
  float layer_norm_eps;
  int32_t use_parallel_residual;
  kvc_backend backend;    /* the backend actually in use */
  kvc_dtype weight_dtype; /* the storage type actually in use */
  int32_t n_threads;
  uint64_t weight_bytes;  /* bytes of weights as stored by the backend */
} kvc_model_info;

/* Fills the defaults (ABI 1.0 layout for the exported function; see the conventions). */
KVC_API void kvc_model_info_init(kvc_model_info *info);
KVC_API void kvc_model_info_init_size(kvc_model_info *info, size_t struct_size);
#define kvc_model_info_init(info) \
  kvc_model_info_init_size((info), sizeof *(info))
KVC_API kvc_status kvc_model_get_info(const kvc_model *model, kvc_model_info *info);

/* The tokenizer of the model folder, or NULL if it has none. Owned by the model. */
KVC_API const kvc_tokenizer *kvc_model_tokenizer(const kvc_model *model);

/* ---------------------------------------------------------------------------------------------
 * Session: one sequence, its KV cache and its eviction policy
 * ------------------------------------------------------------------------------------------- */

typedef struct kvc_session kvc_session;

/* How keys are positioned once entries have been evicted (see docs/policies.md §2). */
typedef enum kvc_position_mode {
  KVC_POSITIONS_SHIFT = 0,   /* rotary by rank in the cache (StreamingLLM's position shift) */
  KVC_POSITIONS_ORIGINAL = 1 /* rotary by the absolute position in the text */
} kvc_position_mode;

/* One policy parameter. Values are text and are parsed against the policy's schema:
 * integers "128", floats "0.5", booleans "true"/"false", choices "per_head", and lists as
 * comma-separated items "0,1,2" (brackets optional: "[0, 1, 2]"); string-list items may be
 * double-quoted with \" \\ \n \t \r escapes (needed for items holding ',' or spaces). */
typedef struct kvc_param {
  const char *name;
  const char *value;
} kvc_param;

/* One policy with its typed parameters (see "Typed parameters" below). */
typedef struct kvc_policy_params kvc_policy_params;

typedef struct kvc_session_options {
  size_t struct_size;
  /* Policy name ("baseline", "streaming", "h2o", ... or a third-party name) resolved to
   * libkvc_policy_<name>.so along the policy search path, or a path to a .so. NULL or ""
   * means the built-in full cache (the same as "baseline", without loading a plugin). */
  const char *policy;
  const kvc_param *params;
  size_t n_params;
  kvc_position_mode positions;
  /* Upper bound on cached entries per (layer, head); 0 = no limit (the cache grows as needed).
   * A step that would exceed it fails with KVC_ERR_OUT_OF_RANGE before changing anything. */
  int64_t max_entries;
  /* Extra folders searched for policy plugins before KVC_POLICY_PATH; ':'-separated. */
  const char *policy_path;
  /* ABI minor 1: the policy and its typed parameters (kvc_policy_params_create). When set, it
   * replaces `policy`, `params` and `policy_path` (which must then be NULL/0). The session
   * copies what it needs: the handle may be freed once the session is created. */
  const kvc_policy_params *policy_params;
} kvc_session_options;

/* Fills the defaults (ABI 1.0 layout for the exported function; see the conventions). */
KVC_API void kvc_session_options_init(kvc_session_options *options);
KVC_API void kvc_session_options_init_size(kvc_session_options *options, size_t struct_size);
#define kvc_session_options_init(options) \
  kvc_session_options_init_size((options), sizeof *(options))

KVC_API kvc_status kvc_session_create(kvc_model *model, const kvc_session_options *options,
                                      kvc_session **out);
KVC_API void kvc_session_free(kvc_session *session);
/* Empties the cache and resets the policy's state; the session can start a new text. */
KVC_API kvc_status kvc_session_reset(kvc_session *session);

typedef enum kvc_logits {
  KVC_LOGITS_NONE = 0, /* no logits are written */
  KVC_LOGITS_LAST = 1, /* logits of the last fed token: vocab_size floats */
  KVC_LOGITS_ALL = 2   /* logits of every fed token: n_tokens * vocab_size floats, row-major */
} kvc_logits;

/* Appends `n_tokens` tokens to the sequence and runs the model over them in one batch
 * (causal prefill; a single token is a decode step). The policy is consulted once after the
 * batch, so eviction never affects the logits of the tokens just fed. `logits` receives what
 * `which` asks for; `logits_capacity` is its length in floats. */
KVC_API kvc_status kvc_session_step(kvc_session *session, const int32_t *tokens,
                                    size_t n_tokens, kvc_logits which, float *logits,
                                    size_t logits_capacity);

typedef enum kvc_score_mode {
  /* Feed one token per step, consulting the policy after each (policies.md §3). */
  KVC_SCORE_STREAM = 0,
  /* One batched forward over all tokens, policy consulted once at the end. Only exact for
   * policies that do not evict within the text (e.g. baseline). */
  KVC_SCORE_PREFILL = 1
} kvc_score_mode;

/* The block size kvc_session_score uses when kvc_score_options.block_size is 0. */
#define KVC_DEFAULT_BLOCK_SIZE 64

typedef struct kvc_score_options {
  size_t struct_size;
  kvc_score_mode mode;
  /* ---- ABI minor 1 (fields start past the 1.0 struct, padding included) ---- */
  /* Optional outputs, one value per fed token (NULL: not wanted); value i belongs to the step
   * that fed tokens[i]: */
  int64_t *cache_entries; /* the most entries any (layer, head) holds after it, evictions done */
  int64_t *evicted;       /* the entries it evicted, summed over (layer, head) */
  float *logits;          /* n_tokens * vocab_size floats: the logits of every fed token */
  size_t logits_capacity; /* floats in `logits` */
  /* Optional: the token that follows tokens[n_tokens - 1] in the text. When given, nll gets
   * one more value, its NLL (so nll holds n_tokens floats), and a long text can be scored in
   * consecutive calls without losing the prediction at each call's end. */
  const int32_t *next_token;
  /* STREAM: tokens per forward pass (at most 256). 1 feeds one token per pass, the reference
   * protocol; 0 means KVC_DEFAULT_BLOCK_SIZE. A larger block gives the same per-token results
   * (docs/block-scoring.md): each layer runs its matrix products for the whole block, then
   * attends the block's queries in step order with the policy's decision for that layer
   * between them. Where that cannot be exact (a policy deciding from every layer at once, a
   * callback policy that does not declare itself layer-local, the CUDA backend) the engine
   * scores token by token; kvc_session_score_report says which ran and why. */
  int32_t block_size;
} kvc_score_options;

/* Fills the defaults (ABI 1.0 layout for the exported function; see the conventions). */
KVC_API void kvc_score_options_init(kvc_score_options *options);
KVC_API void kvc_score_options_init_size(kvc_score_options *options, size_t struct_size);
#define kvc_score_options_init(options) \
  kvc_score_options_init_size((options), sizeof *(options))

/* How the last kvc_session_score of a session ran. */
typedef struct kvc_score_report {
  size_t struct_size;
  int32_t block_size; /* tokens per forward pass (1: token by token) */
  const char *path;   /* "block" (exact, layer by layer), "token", or "prefill" */
  const char *reason; /* why "token" when a larger block was asked for; else "" */
} kvc_score_report;

/* Strings are owned by the session and valid until its next call. */
KVC_API void kvc_score_report_init_size(kvc_score_report *report, size_t struct_size);
#define kvc_score_report_init(report) \
  kvc_score_report_init_size((report), sizeof *(report))
KVC_API kvc_status kvc_session_score_report(const kvc_session *session,
                                            kvc_score_report *report);

/* Teacher-forced scoring: appends tokens[0..n) to the session and writes
 * nll[i] = -log p(tokens[i+1] | everything before it in the session) for i in [0, n-1),
 * in nats, computed before any eviction of the step that fed tokens[i]. `nll` holds n-1
 * floats, or n with options->next_token (may be NULL). `options` may be NULL (stream, the
 * default block size). */
KVC_API kvc_status kvc_session_score(kvc_session *session, const int32_t *tokens,
                                     size_t n_tokens, const kvc_score_options *options,
                                     float *nll, size_t nll_capacity);

typedef struct kvc_cache_stats {
  size_t struct_size;
  int32_t n_layers;
  int32_t n_heads;
  int64_t capacity;       /* the policy's budget per (layer, head); -1 if unbounded */
  int64_t max_entries;    /* hard limit per (layer, head) (see kvc_session_options) */
  int64_t min_entries;    /* fewest entries in any (layer, head) */
  int64_t max_entries_now;/* most entries in any (layer, head) */
  int64_t total_entries;  /* sum over all (layer, head) */
  int64_t n_tokens_seen;  /* tokens appended since create/reset */
  int64_t n_evictions;    /* times the policy evicted something */
  /* ---- ABI minor 2 ---- */
  int64_t kv_bytes;          /* bytes of the keys and values of the entries cached now */
  int64_t kv_bytes_reserved; /* bytes of the key/value slots allocated (freed slots reused) */
} kvc_cache_stats;

/* Fills the defaults (ABI 1.0 layout for the exported function; see the conventions). */
KVC_API void kvc_cache_stats_init(kvc_cache_stats *stats);
KVC_API void kvc_cache_stats_init_size(kvc_cache_stats *stats, size_t struct_size);
#define kvc_cache_stats_init(stats) \
  kvc_cache_stats_init_size((stats), sizeof *(stats))
KVC_API kvc_status kvc_session_cache_stats(const kvc_session *session, kvc_cache_stats *stats);

/* Entries currently cached per (layer, head), row-major [n_layers][n_heads]. */
KVC_API kvc_status kvc_session_cache_counts(const kvc_session *session, int64_t *counts,
                                            size_t capacity);

/* The original positions (index in the text since reset) and token ids of the entries of one
 * (layer, head), oldest first. Either output may be NULL. `*n_entries` receives the count. */
KVC_API kvc_status kvc_session_cache_entries(const kvc_session *session, int32_t layer,
                                             int32_t head, int64_t *positions,
                                             int32_t *token_ids, size_t capacity,
                                             size_t *n_entries);

/* ABI minor 1. A description of the session's policy as JSON text (UTF-8, an object): the
 * plugin (name, version, file), its resolved parameters, what it set up (signals, trigger,
 * capacity), its rule as the engine runs it (sizes, scope and score layers, allocation, lazy
 * refresh, the separators as ids and as text), and the notes the plugin left (for example
 * separator strings that are not one token). Same buffer protocol as kvc_detokenize; results
 * that quote it say exactly what ran. */
KVC_API kvc_status kvc_session_policy_report(const kvc_session *session, char *json,
                                             size_t capacity, size_t *json_len);

/* ABI minor 1. The values of the signal the policy ranks entries by (its rule's heavy signal;
 * for a callback policy, the first signal it asked for), for the entries of one (layer, head),
 * oldest first, as kvc_session_cache_entries lists them. KVC_ERR_NOT_FOUND when the policy
 * ranks by no signal (streaming, sepllm, the full cache). */
KVC_API kvc_status kvc_session_cache_scores(const kvc_session *session, int32_t layer,
                                            int32_t head, float *scores, size_t capacity,
                                            size_t *n_entries);

/* Manual eviction: keeps only the entries at `ranks` (0 = oldest; strictly increasing) in
 * (layer, head), or in every layer/head where layer/head is -1. For experiments and tests;
 * positions are handled according to the session's position mode. */
KVC_API kvc_status kvc_session_keep(kvc_session *session, int32_t layer, int32_t head,
                                    const int32_t *ranks, size_t n_ranks);

/* ---------------------------------------------------------------------------------------------
 * Policies (plugins; see kvc/policy.h for writing one)
 * ------------------------------------------------------------------------------------------- */

typedef enum kvc_param_type {
  KVC_PARAM_INT = 0,
  KVC_PARAM_FLOAT = 1,
  KVC_PARAM_BOOL = 2,
  KVC_PARAM_CHOICE = 3,   /* one of a fixed list of strings */
  KVC_PARAM_INT_LIST = 4, /* e.g. token ids or layer indices */
  KVC_PARAM_STRING_LIST = 5
} kvc_param_type;

/* Describes one parameter of a policy. Strings are owned by the library and stay valid until
 * kvc_policy_list_free (or for the process lifetime for a loaded policy). Schemas are arrays of
 * this struct: a plugin's array is read with a stride of params[0].struct_size, and the
 * library hands arrays of exactly this layout to callers, so it is frozen for ABI major 1. */
typedef struct kvc_param_info {
  size_t struct_size;
  const char *name;
  kvc_param_type type;
  const char *default_value; /* in the kvc_param text syntax */
  double min_value;          /* inclusive range for INT/FLOAT (and list items of INT_LIST) */
  double max_value;
  const char *choices;       /* CHOICE: '|'-separated allowed values; else NULL */
  const char *help;
} kvc_param_info;

typedef struct kvc_policy_info {
  size_t struct_size;
  const char *name;
  const char *version;
  const char *description;
  const char *path; /* the .so it was loaded from */
  size_t n_params;
  const kvc_param_info *params;
} kvc_policy_info;

typedef struct kvc_policy_list kvc_policy_list;

/* Finds every loadable policy on the search path (`extra_path`: ':'-separated folders searched
 * first; may be NULL). Plugins that fail validation are skipped (kvc_policy_list_errors). */
KVC_API kvc_status kvc_policy_list_load(const char *extra_path, kvc_policy_list **out);
KVC_API void kvc_policy_list_free(kvc_policy_list *list);
KVC_API size_t kvc_policy_list_size(const kvc_policy_list *list);
/* The i-th policy, sorted by name; NULL if out of range. Owned by the list. */
KVC_API const kvc_policy_info *kvc_policy_list_get(const kvc_policy_list *list, size_t index);
/* Newline-separated messages for candidate files that were not valid plugins ("" if none). */
KVC_API const char *kvc_policy_list_errors(const kvc_policy_list *list);

/* ---- Typed parameters (ABI minor 1) ---------------------------------------------------------
 * A kvc_policy_params holds one policy (loaded and validated) and one typed value per entry of
 * its schema, defaults filled in. Each setter checks its value against the schema at once
 * (type, range, choices) and fails with KVC_ERR_INVALID_ARGUMENT naming the policy, the
 * parameter, the value and what is allowed; setting one parameter twice is an error too (the
 * caller decides which source wins). Hosts parse each value once, here: a TOML integer goes in
 * with kvc_policy_params_set_int, a command-line NAME=VALUE with kvc_policy_params_set_text,
 * and the session receives typed values without a text round trip. A kvc_policy_params is
 * used by one thread at a time. */

/* A typed value, as kvc_policy_params_get hands it out. Pointers are owned by the
 * kvc_policy_params and valid until it changes or is freed. */
typedef struct kvc_param_value {
  size_t struct_size;
  kvc_param_type type;
  int64_t i;                  /* INT; BOOL (0 or 1); CHOICE (index into the choices) */
  double f;                   /* FLOAT */
  const int64_t *ints;        /* INT_LIST */
  size_t n_ints;
  const char *const *strings; /* STRING_LIST; CHOICE: strings[0] is the chosen text */
  size_t n_strings;
} kvc_param_value;

KVC_API void kvc_param_value_init_size(kvc_param_value *value, size_t struct_size);
#define kvc_param_value_init(value) \
  kvc_param_value_init_size((value), sizeof *(value))

/* Loads the policy (name or path, as kvc_session_options.policy; `extra_path` as
 * policy_path, may be NULL) and starts from its defaults. */
KVC_API kvc_status kvc_policy_params_create(const char *name_or_path, const char *extra_path,
                                            kvc_policy_params **out);
KVC_API void kvc_policy_params_free(kvc_policy_params *params);

/* The text syntax of kvc_param, for values typed on a command line. */
KVC_API kvc_status kvc_policy_params_set_text(kvc_policy_params *params, const char *name,
                                              const char *text);
/* INT, FLOAT (converted), or an INT_LIST of one item. */
KVC_API kvc_status kvc_policy_params_set_int(kvc_policy_params *params, const char *name,
                                             int64_t value);
KVC_API kvc_status kvc_policy_params_set_float(kvc_policy_params *params, const char *name,
                                               double value);
KVC_API kvc_status kvc_policy_params_set_bool(kvc_policy_params *params, const char *name,
                                              int value);
KVC_API kvc_status kvc_policy_params_set_ints(kvc_policy_params *params, const char *name,
                                              const int64_t *values, size_t n_values);
KVC_API kvc_status kvc_policy_params_set_strings(kvc_policy_params *params, const char *name,
                                                 const char *const *values, size_t n_values);

/* The policy: name, version, description, file and schema (owned by the handle). */
KVC_API const kvc_policy_info *kvc_policy_params_policy(const kvc_policy_params *params);
/* The value of schema entry `index` (defaults included); `*is_set` (may be NULL) receives 1
 * when a setter gave it, 0 for the default. */
KVC_API kvc_status kvc_policy_params_get(const kvc_policy_params *params, size_t index,
                                         kvc_param_value *value, int *is_set);
/* Creates and destroys one instance without a model, so the plugin's own checks of its
 * parameters run too (as kvc_policy_check). Model-dependent checks wait for the session. */
KVC_API kvc_status kvc_policy_params_check(const kvc_policy_params *params);

/* Loads one policy by name or path, validates its descriptor and `params` against its schema,
 * and creates and destroys one instance without a model (so the policy's own checks of its
 * parameters run as well), without creating a session (for config checking). `params` may be
 * NULL when n_params is 0. Model-dependent checks (e.g. layer indices) wait for the session. */
KVC_API kvc_status kvc_policy_check(const char *name_or_path, const char *extra_path,
                                    const kvc_param *params, size_t n_params);

/* ---------------------------------------------------------------------------------------------
 * Sampling and generation (ABI minor 2)
 *
 * A kvc_sampler turns the logits of a step into the next token; kvc_generate runs the loop:
 * prefill the prompt, then sample, hand the token to a callback, feed it, and again, until
 * max_tokens, a stop sequence, a stop token or the callback ends it.
 *
 *     static int32_t print_piece(void *user, int32_t token, const char *piece, size_t len) {
 *       fwrite(piece, 1, len, stdout); fflush(stdout); return 0;   (nonzero stops)
 *     }
 *     ...
 *     kvc_sampler_options sp; kvc_sampler_options_init(&sp);
 *     sp.temperature = 0.8f; sp.top_p = 0.95f; sp.seed = 42;
 *     kvc_sampler *sampler; kvc_sampler_create(&sp, &sampler);
 *     const char *stop[] = {"\n\n"};
 *     kvc_generate_options go; kvc_generate_options_init(&go);
 *     go.max_tokens = 64; go.stop = stop; go.n_stop = 1; go.on_token = print_piece;
 *     kvc_generate_result r; kvc_generate_result_init(&r);
 *     if (kvc_generate(session, sampler, prompt_ids, n_prompt, &go, NULL, 0, &r) != KVC_OK)
 *       fprintf(stderr, "%s\n", kvc_last_error());
 *     kvc_sampler_free(sampler);
 * ------------------------------------------------------------------------------------------- */

typedef struct kvc_sampler kvc_sampler;

/* The sampler's settings. The chain runs in the order of Hugging Face transformers:
 *  1. repetition penalty (the CTRL rule, as HF's RepetitionPenaltyLogitsProcessor): for each
 *     distinct id among the last repetition_last_n tokens of the history (the accepted prompt
 *     and every sampled token), a logit l > 0 becomes l / repetition_penalty, and l <= 0
 *     becomes l * repetition_penalty;
 *  2. temperature == 0: greedy, the largest logit (the lowest id among equal ones); steps 3-6
 *     do not apply;
 *  3. s = logit / temperature; candidates sorted by s descending, then by id;
 *  4. top_k > 0: the first top_k candidates are kept (exactly top_k);
 *  5. top_p < 1: with p = softmax(s) over those, the shortest prefix whose p sums to at least
 *     top_p is kept (a candidate is kept iff the p before it sum to less than top_p);
 *  6. min_p > 0: the candidates with p >= min_p * (the largest p) are kept;
 *  7. the kept p are renormalized and one token drawn by inverse CDF in the sorted order, with
 *     u in [0, 1) the n-th output of SplitMix64 seeded with `seed`, n the number of tokens this
 *     sampler has sampled since create/reset (from 0):
 *       z = seed + (n + 1) * 0x9E3779B97F4A7C15;  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
 *       z = (z ^ (z >> 27)) * 0x94D049BB133111EB;  z ^= z >> 31;  u = (z >> 11) * 2^-53;
 *     the token is the first candidate whose cumulative p exceeds u.
 * So a seed gives the same tokens on every run, and on the CPU for every thread count. Values
 * outside the ranges below are KVC_ERR_INVALID_ARGUMENT naming the field and the value. */
typedef struct kvc_sampler_options {
  size_t struct_size;
  float temperature;         /* >= 0; 0 = greedy. Default 1 (the model's distribution) */
  int32_t top_k;             /* >= 0; 0 = off (default) */
  float top_p;               /* in (0, 1]; 1 = off (default) */
  float min_p;               /* in [0, 1]; 0 = off (default) */
  float repetition_penalty;  /* > 0; 1 = off (default); > 1 discourages repeats */
  int32_t repetition_last_n; /* tokens of history penalized: -1 all, 0 none; default 64 */
  uint64_t seed;             /* default 0 */
} kvc_sampler_options;

KVC_API void kvc_sampler_options_init_size(kvc_sampler_options *options, size_t struct_size);
#define kvc_sampler_options_init(options) \
  kvc_sampler_options_init_size((options), sizeof *(options))

/* Creates a sampler (`options` may be NULL for the defaults). A sampler holds its history and
 * its position in the random stream; one thread at a time. Free with kvc_sampler_free. */
KVC_API kvc_status kvc_sampler_create(const kvc_sampler_options *options, kvc_sampler **out);
KVC_API void kvc_sampler_free(kvc_sampler *sampler);
/* Clears the history and restarts the random stream: the next tokens repeat the first ones. */
KVC_API kvc_status kvc_sampler_reset(kvc_sampler *sampler);
/* Appends tokens the sampler did not pick (a prompt) to the history the penalty looks at. */
KVC_API kvc_status kvc_sampler_accept(kvc_sampler *sampler, const int32_t *tokens,
                                      size_t n_tokens);
/* Samples one id in [0, n_logits) from `logits` (e.g. kvc_session_step's KVC_LOGITS_LAST
 * output) and appends it to the history. NaN and -inf logits are never chosen; no finite logit
 * at all is KVC_ERR_INVALID_ARGUMENT. */
KVC_API kvc_status kvc_sampler_sample(kvc_sampler *sampler, const float *logits,
                                      size_t n_logits, int32_t *token);

/* Why kvc_generate returned. */
typedef enum kvc_stop_reason {
  KVC_STOP_MAX_TOKENS = 0, /* max_tokens were generated */
  KVC_STOP_SEQUENCE = 1,   /* the text produced a stop sequence (stop_index says which) */
  KVC_STOP_TOKEN = 2,      /* a stop token was sampled (stop_index says which) */
  KVC_STOP_CALLBACK = 3    /* the callback returned nonzero */
} kvc_stop_reason;

/* Called once per generated token, in order, as soon as it is sampled (before it is fed).
 * `piece` (NUL-terminated, `piece_len` bytes without the terminator, valid during the call) is
 * the text released with this token; the pieces of a generation concatenate to its text. Text
 * is held back while it could still begin a stop sequence, or ends in an incomplete UTF-8
 * character (byte-level tokens may split one), so a piece may be empty and a later one may hold
 * several tokens' text. Released text has invalid UTF-8 replaced by U+FFFD as kvc_detokenize
 * does. The text of a stop sequence, of what follows it and of stop tokens is never released.
 * Return 0 to go on, nonzero to stop after this token (text still held is then dropped). */
typedef int32_t (*kvc_token_callback)(void *user_data, int32_t token, const char *piece,
                                      size_t piece_len);

typedef struct kvc_generate_options {
  size_t struct_size;
  int32_t max_tokens;             /* tokens to generate at most, >= 0; default 128 */
  /* Stop sequences (UTF-8, non-empty), matched on the generated text's bytes wherever token
   * boundaries fall; generation ends at the earliest one to complete (the earliest starting,
   * then the first listed). Needs the model's tokenizer. */
  const char *const *stop;
  size_t n_stop;
  /* Token ids that end generation when sampled (e.g. the id of "<|endoftext|>"). */
  const int32_t *stop_tokens;
  size_t n_stop_tokens;
  kvc_token_callback on_token; /* may be NULL */
  void *user_data;             /* passed to on_token */
} kvc_generate_options;

KVC_API void kvc_generate_options_init_size(kvc_generate_options *options, size_t struct_size);
#define kvc_generate_options_init(options) \
  kvc_generate_options_init_size((options), sizeof *(options))

typedef struct kvc_generate_result {
  size_t struct_size;
  int32_t n_tokens;            /* tokens generated, the last (stop) one included */
  kvc_stop_reason stop_reason;
  int32_t stop_index;          /* index into stop or stop_tokens; -1 otherwise */
  uint64_t text_len;           /* bytes released through the callback in all */
} kvc_generate_result;

KVC_API void kvc_generate_result_init_size(kvc_generate_result *result, size_t struct_size);
#define kvc_generate_result_init(result) \
  kvc_generate_result_init_size((result), sizeof *(result))

/* Generates text after `prompt` (n_prompt >= 1 tokens appended to whatever the session already
 * holds, in one batched step; the session's policy applies throughout). Each token is sampled
 * with `sampler` (NULL: greedy) from the last step's logits, restricted to ids the model's
 * tokenizer names, handed to options->on_token, then fed with kvc_session_step. `options`
 * may be NULL (defaults, no callback). `tokens` (may be NULL) receives the generated ids and
 * must then hold max_tokens of them; `result` (may be NULL) says how it ended.
 * On return the session holds the prompt and every generated token except the last one, which
 * was not fed: to continue, pass it as the first token of the next prompt. The prompt and the
 * sampled tokens join the sampler's history. On an error (e.g. the session's max_entries), the
 * tokens already handed to the callback stay handed, and the session keeps what was fed. */
KVC_API kvc_status kvc_generate(kvc_session *session, kvc_sampler *sampler,
                                const int32_t *prompt, size_t n_prompt,
                                const kvc_generate_options *options, int32_t *tokens,
                                size_t tokens_capacity, kvc_generate_result *result);

#ifdef __cplusplus
}
#endif

#endif /* KVC_KVC_H */
