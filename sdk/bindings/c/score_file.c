/*
 * score_file: the perplexity of a text file under a model, using only the C ABI (kvc/kvc.h).
 *
 *   score_file [--policy NAME] [--param NAME=VALUE]... [--positions shift|original]
 *              [--threads N] MODEL_DIR TEXT_FILE
 *
 * The file is tokenized whole with the model's tokenizer (no BOS), fed one token per step, and
 * the NLL of every token after the first is averaged, the same protocol as kvc-eval. Prints
 * "tokens N", "scored N" and "ppl X" on stdout; exits 1 with the library's message on failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvc/kvc.h>

#define MAX_PARAMS 32

static void usage(void) {
  fprintf(stderr,
          "usage: score_file [--policy NAME] [--param NAME=VALUE]... [--positions shift|original]\n"
          "                  [--threads N] MODEL_DIR TEXT_FILE\n");
}

/* Prints what failed with the library's message for this thread; returns 1 for main. */
static int report(const char *what, kvc_status status) {
  fprintf(stderr, "score_file: %s failed (%s): %s\n", what, kvc_status_name(status),
          kvc_last_error());
  return 1;
}

static char *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "score_file: cannot open text file '%s'\n", path);
    return NULL;
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) {
      char *grown = realloc(buf, cap *= 2);
      if (!grown) free(buf);
      buf = grown;
    }
  }
  int failed = ferror(f);
  fclose(f);
  if (!buf || failed) {
    fprintf(stderr, "score_file: cannot read text file '%s'\n", path);
    free(buf);
    return NULL;
  }
  *size = len;
  return buf;
}

int main(int argc, char **argv) {
  kvc_param params[MAX_PARAMS];
  size_t n_params = 0;
  kvc_session_options so;
  kvc_session_options_init(&so);
  kvc_model_options mo;
  kvc_model_options_init(&mo);
  mo.backend = KVC_BACKEND_CPU;

  int i = 1;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
    const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (!value) {
      fprintf(stderr, "score_file: %s expects a value\n", flag);
      return 2;
    }
    if (strcmp(flag, "--policy") == 0) {
      so.policy = value;
    } else if (strcmp(flag, "--param") == 0) {
      char *eq = strchr(argv[i + 1], '=');
      if (!eq || eq == value || n_params == MAX_PARAMS) {
        fprintf(stderr, "score_file: --param expects NAME=VALUE (at most %d), got '%s'\n",
                MAX_PARAMS, value);
        return 2;
      }
      *eq = '\0'; /* argv strings are writable: split NAME=VALUE in place */
      params[n_params].name = value;
      params[n_params].value = eq + 1;
      n_params++;
    } else if (strcmp(flag, "--positions") == 0) {
      if (strcmp(value, "shift") == 0) {
        so.positions = KVC_POSITIONS_SHIFT;
      } else if (strcmp(value, "original") == 0) {
        so.positions = KVC_POSITIONS_ORIGINAL;
      } else {
        fprintf(stderr, "score_file: --positions expects shift or original, got '%s'\n", value);
        return 2;
      }
    } else if (strcmp(flag, "--threads") == 0) {
      mo.n_threads = atoi(value);
    } else {
      fprintf(stderr, "score_file: unknown flag %s\n", flag);
      usage();
      return 2;
    }
  }
  if (argc - i != 2) {
    usage();
    return 2;
  }
  so.params = params;
  so.n_params = n_params;

  size_t text_len = 0;
  char *text = read_file(argv[i + 1], &text_len);
  if (!text) return 1;

  int rc = 1;
  kvc_model *model = NULL;
  kvc_session *session = NULL;
  int32_t *ids = NULL;
  float *nll = NULL;
  kvc_status st;

  if ((st = kvc_model_load(argv[i], &mo, &model)) != KVC_OK) {
    rc = report("loading the model", st);
    goto done;
  }
  const kvc_tokenizer *tok = kvc_model_tokenizer(model);
  if (!tok) {
    fprintf(stderr, "score_file: model '%s' has no tokenizer.json\n", argv[i]);
    goto done;
  }
  /* First call sizes the buffer, second fills it. */
  size_t n_ids = 0;
  st = kvc_tokenize(tok, text, text_len, NULL, 0, &n_ids);
  if (st != KVC_OK && st != KVC_ERR_BUFFER_TOO_SMALL) {
    rc = report("tokenizing", st);
    goto done;
  }
  if (n_ids < 2) {
    fprintf(stderr, "score_file: '%s' has %zu tokens; at least 2 are needed\n", argv[i + 1],
            n_ids);
    goto done;
  }
  ids = malloc(n_ids * sizeof *ids);
  nll = malloc((n_ids - 1) * sizeof *nll);
  if (!ids || !nll) {
    fprintf(stderr, "score_file: out of memory for %zu tokens\n", n_ids);
    goto done;
  }
  if ((st = kvc_tokenize(tok, text, text_len, ids, n_ids, &n_ids)) != KVC_OK) {
    rc = report("tokenizing", st);
    goto done;
  }
  if ((st = kvc_session_create(model, &so, &session)) != KVC_OK) {
    rc = report("creating the session", st);
    goto done;
  }
  if ((st = kvc_session_score(session, ids, n_ids, NULL, nll, n_ids - 1)) != KVC_OK) {
    rc = report("scoring", st);
    goto done;
  }
  double sum = 0;
  for (size_t k = 0; k + 1 < n_ids; ++k) sum += nll[k];
  printf("tokens %zu\nscored %zu\nppl %.6f\n", n_ids, n_ids - 1, exp(sum / (double)(n_ids - 1)));
  rc = 0;

done:
  kvc_session_free(session);
  kvc_model_free(model);
  free(nll);
  free(ids);
  free(text);
  return rc;
}
