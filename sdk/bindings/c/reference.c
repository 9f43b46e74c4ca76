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

  if (!rc && tok) {
    size_t n_text = 0;
    int32_t *text_ids = tokenize_file(tok, argv[2], &n_text);
    if (!text_ids) {
      rc = 1;
    } else {
      print_ids("text.ids", text_ids, n_text);
      if (kvc_model_tokenizer(model)) {
        rc |= score_case(model, "text", NULL, NULL, 0, text_ids, n_text);
      }
      free(text_ids);
    }
  }
  kvc_tokenizer_free(own_tok);
  kvc_model_free(model);
  return rc;
}
