/*
 * kvc-bindings-reference: the library's own results for the cases every language binding's
 * tests repeat, written as a line-oriented text file (see docs/bindings.md, "Reference file").
 *
 *   kvc-bindings-reference MODEL_DIR SAMPLE_TEXT [TOKENIZER_JSON] > reference.txt
 *
 * Cases (each binding hard-codes the same options):
 *   baseline   the fixed ids below, full cache, scored one token per step
 *   streaming  the same ids with policy "streaming", start_size=4, recent_size=16, shift
 *   text       SAMPLE_TEXT tokenized by the model's tokenizer and scored like baseline
 *   gen.greedy   kvc_generate after gen.prompt (the first 16 ids of the text with the model's
 *                tokenizer, else the first 8 fixed ids), full cache, no sampler (greedy), 16
 *                tokens; with the model's tokenizer, the released text as hex (gen.greedy.text)
 *   gen.sampled  the same prompt with policy "streaming" (4 + 16), a sampler with temperature
 *                0.8, top_k 40, top_p 0.95, min_p 0.02, repetition_penalty 1.1,
 *                repetition_last_n 64 and seed 1234, 16 tokens (and gen.sampled.text)
 * When the model has no tokenizer, TOKENIZER_JSON (if given) is used for the text's ids only.
 * Floats are printed with 9 significant digits, which round-trips a float exactly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvc/kvc.h>

#define N_IDS 48

static int fail(const char *what, kvc_status status) {
  fprintf(stderr, "kvc-bindings-reference: %s failed (%s): %s\n", what, kvc_status_name(status),
          kvc_last_error());
  return 1;
}

static void print_ids(const char *key, const int32_t *ids, size_t n) {
  printf("%s", key);
  for (size_t i = 0; i < n; ++i) printf(" %d", ids[i]);
  printf("\n");
}

static void print_floats(const char *key, const float *v, size_t n) {
  printf("%s", key);
  for (size_t i = 0; i < n; ++i) printf(" %.9g", (double)v[i]);
  printf("\n");
}

/* Scores `ids` in a new session with the given policy; prints nll.<name> (and stats.<name>). */
static int score_case(kvc_model *model, const char *name, const char *policy,
                      const kvc_param *params, size_t n_params, const int32_t *ids, size_t n) {
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = policy;
  so.params = params;
  so.n_params = n_params;
  kvc_session *session = NULL;
  kvc_status st = kvc_session_create(model, &so, &session);
  if (st != KVC_OK) return fail("kvc_session_create", st);
  float *nll = malloc((n - 1) * sizeof *nll);
  kvc_cache_stats stats;
  kvc_cache_stats_init(&stats);
  if (!nll) {
    kvc_session_free(session);
    fprintf(stderr, "kvc-bindings-reference: out of memory\n");
    return 1;
  }
  st = kvc_session_score(session, ids, n, NULL, nll, n - 1);
  if (st == KVC_OK) st = kvc_session_cache_stats(session, &stats);
  kvc_session_free(session);
  if (st != KVC_OK) {
    free(nll);
    return fail(name, st);
  }
  char key[64];
  snprintf(key, sizeof key, "nll.%s", name);
  print_floats(key, nll, n - 1);
  printf("stats.%s %lld %lld %lld %lld\n", name, (long long)stats.total_entries,
         (long long)stats.max_entries_now, (long long)stats.n_evictions,
         (long long)stats.n_tokens_seen);
  free(nll);
  return 0;
}

/* The text a generation releases through its callback. */
typedef struct text_buffer {
  char *data;
  size_t len, capacity;
  int failed;
} text_buffer;

static int32_t collect_piece(void *user, int32_t token, const char *piece, size_t len) {
  text_buffer *t = user;
  (void)token;
  if (t->len + len > t->capacity) {
    size_t capacity = 2 * (t->len + len) + 64;
    char *data = realloc(t->data, capacity);
    if (!data) {
      t->failed = 1;
      return 1;
    }
    t->data = data;
    t->capacity = capacity;
  }
  memcpy(t->data + t->len, piece, len);
  t->len += len;
  return 0;
}

#define N_GENERATE 16

/* Generates N_GENERATE tokens after `prompt` in a new session; prints gen.<name> (and, when
 * the model has a tokenizer, gen.<name>.text as hex). `sampling` NULL: greedy. */
static int generate_case(kvc_model *model, const char *name, const char *policy,
                         const kvc_param *params, size_t n_params,
                         const kvc_sampler_options *sampling, const int32_t *prompt,
                         size_t n_prompt) {
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = policy;
  so.params = params;
  so.n_params = n_params;
  kvc_session *session = NULL;
  kvc_status st = kvc_session_create(model, &so, &session);
  if (st != KVC_OK) return fail("kvc_session_create", st);
  kvc_sampler *sampler = NULL;
  if (sampling && (st = kvc_sampler_create(sampling, &sampler)) != KVC_OK) {
    kvc_session_free(session);
    return fail("kvc_sampler_create", st);
  }
  text_buffer text = {NULL, 0, 0, 0};
  kvc_generate_options go;
  kvc_generate_options_init(&go);
  go.max_tokens = N_GENERATE;
  go.on_token = collect_piece;
  go.user_data = &text;
  kvc_generate_result result;
  kvc_generate_result_init(&result);
  int32_t tokens[N_GENERATE];
  st = kvc_generate(session, sampler, prompt, n_prompt, &go, tokens, N_GENERATE, &result);
  kvc_sampler_free(sampler);
  kvc_session_free(session);
  if (st != KVC_OK || text.failed) {
    free(text.data);
    if (text.failed) fprintf(stderr, "kvc-bindings-reference: out of memory\n");
    return st != KVC_OK ? fail("kvc_generate", st) : 1;
  }
  char key[64];
  snprintf(key, sizeof key, "gen.%s", name);
  print_ids(key, tokens, (size_t)result.n_tokens);
  if (kvc_model_tokenizer(model)) {
    printf("%s.text ", key);
    for (size_t i = 0; i < text.len; ++i) printf("%02x", (unsigned char)text.data[i]);
    printf("\n");
  }
  free(text.data);
  return 0;
}

/* Tokenizes a whole file; returns a malloc'ed array (caller frees) or NULL. */
static int32_t *tokenize_file(const kvc_tokenizer *tok, const char *path, size_t *n_ids) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "kvc-bindings-reference: cannot open '%s'\n", path);
    return NULL;
  }
  static char text[1 << 16];
  size_t len = fread(text, 1, sizeof text, f);
  int too_big = !feof(f);
  fclose(f);
  if (too_big) {
    fprintf(stderr, "kvc-bindings-reference: '%s' is larger than %zu bytes\n", path, sizeof text);
    return NULL;
  }
  kvc_status st = kvc_tokenize(tok, text, len, NULL, 0, n_ids);
  if (st != KVC_OK && st != KVC_ERR_BUFFER_TOO_SMALL) {
    fail("kvc_tokenize", st);
    return NULL;
  }
  int32_t *ids = malloc((*n_ids ? *n_ids : 1) * sizeof *ids);
  if (ids && (st = kvc_tokenize(tok, text, len, ids, *n_ids, n_ids)) != KVC_OK) {
    fail("kvc_tokenize", st);
    free(ids);
    return NULL;
  }
  return ids;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: kvc-bindings-reference MODEL_DIR SAMPLE_TEXT [TOKENIZER_JSON]\n");
    return 2;
  }
  kvc_model_options mo;
  kvc_model_options_init(&mo);
  mo.backend = KVC_BACKEND_CPU;
  kvc_model *model = NULL;
  kvc_status st = kvc_model_load(argv[1], &mo, &model);
  if (st != KVC_OK) return fail("kvc_model_load", st);
  kvc_model_info info;
  kvc_model_info_init(&info);
  if ((st = kvc_model_get_info(model, &info)) != KVC_OK) return fail("kvc_model_get_info", st);

  const kvc_tokenizer *tok = kvc_model_tokenizer(model);
  kvc_tokenizer *own_tok = NULL;
  const char *tok_name = tok ? "model" : "none";
  if (!tok && argc == 4) {
    FILE *probe = fopen(argv[3], "rb");
    if (probe) {
      fclose(probe);
      if ((st = kvc_tokenizer_load(argv[3], &own_tok)) != KVC_OK) {
        return fail("kvc_tokenizer_load", st);
      }
      tok = own_tok;
      tok_name = argv[3];
    }
  }

  /* A fixed sequence valid for any vocabulary: spread over the ids the model and its
   * tokenizer (if any) both know. */
  int32_t vocab = info.vocab_size;
  if (kvc_model_tokenizer(model)) {
    int32_t tv = kvc_tokenizer_vocab_size(kvc_model_tokenizer(model));
    if (tv < vocab) vocab = tv;
  }
  int32_t ids[N_IDS];
  for (int i = 0; i < N_IDS; ++i) ids[i] = (int32_t)((i * 37 + 11) % vocab);

  printf("kvc-bindings-reference 1\n");
  printf("model %s\n", argv[1]);
  printf("text %s\n", argv[2]);
  printf("tokenizer %s\n", tok_name);
  print_ids("ids", ids, N_IDS);

  int rc = 0;
  const kvc_param streaming[] = {{"start_size", "4"}, {"recent_size", "16"}};
  rc |= score_case(model, "baseline", NULL, NULL, 0, ids, N_IDS);
  rc |= score_case(model, "streaming", "streaming", streaming, 2, ids, N_IDS);

  /* The generation prompt: the text's first ids with the model's own tokenizer, else the
   * fixed ids. */
  int32_t prompt[16];
  size_t n_prompt = 8;
  memcpy(prompt, ids, n_prompt * sizeof *prompt);
  if (!rc && tok) {
    size_t n_text = 0;
    int32_t *text_ids = tokenize_file(tok, argv[2], &n_text);
    if (!text_ids) {
      rc = 1;
    } else {
      print_ids("text.ids", text_ids, n_text);
      if (kvc_model_tokenizer(model)) {
        rc |= score_case(model, "text", NULL, NULL, 0, text_ids, n_text);
        if (n_text >= 16) {
          n_prompt = 16;
          memcpy(prompt, text_ids, n_prompt * sizeof *prompt);
        }
      }
      free(text_ids);
    }
  }

  if (!rc) {
    print_ids("gen.prompt", prompt, n_prompt);
    rc |= generate_case(model, "greedy", NULL, NULL, 0, NULL, prompt, n_prompt);
    kvc_sampler_options sp;
    kvc_sampler_options_init(&sp);
    sp.temperature = 0.8f;
    sp.top_k = 40;
    sp.top_p = 0.95f;
    sp.min_p = 0.02f;
    sp.repetition_penalty = 1.1f;
    sp.repetition_last_n = 64;
    sp.seed = 1234;
    rc |= generate_case(model, "sampled", "streaming", streaming, 2, &sp, prompt, n_prompt);
  }
  kvc_tokenizer_free(own_tok);
  kvc_model_free(model);
  return rc;
}
