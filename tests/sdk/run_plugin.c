/*
 * run_plugin: drives an out-of-tree policy plugin through the public C ABI only, as a third
 * party would. Built against the *installed* kvc package by out_of_tree.cmake.
 *
 *   run_plugin <model> <plugin .so path> <plugin folder> [<installed plugin .so path>]
 *
 * The policy must be the SDK template's "keynorm" (start_size, recent_size, budget). It is
 * created by absolute path, by name through the session's policy_path, and by name through
 * KVC_POLICY_PATH (which the caller must set to the plugin folder); each session scores the
 * same tokens, and the kept sets must hold the sinks, the recent window and exactly `budget`
 * entries per (layer, head). With a fourth argument (the plugin installed into kvc's prefix),
 * KVC_POLICY_PATH is then unset and the name must resolve to that copy, found next to
 * libkvc.so. Exit status 0 when every check passes.
 */
#define _XOPEN_SOURCE 700 /* realpath, unsetenv */
#include <kvc/kvc.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_TOKENS = 48, START = 2, RECENT = 4, BUDGET = 10 };

static int failures = 0;

#define CHECK(cond, ...)                                      \
  do {                                                        \
    if (!(cond)) {                                            \
      fprintf(stderr, "run_plugin: FAILED %s: ", #cond);      \
      fprintf(stderr, __VA_ARGS__);                           \
      fprintf(stderr, "\n");                                  \
      ++failures;                                             \
    }                                                         \
  } while (0)

static kvc_status create(kvc_model *model, const char *policy, const char *policy_path,
                         const char *budget, kvc_session **out) {
  kvc_param params[3] = {{"start_size", "2"}, {"recent_size", "4"}, {"budget", budget}};
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = policy;
  so.policy_path = policy_path;
  so.params = params;
  so.n_params = 3;
  return kvc_session_create(model, &so, out);
}

/* Scores the tokens and checks the kept set of every (layer, head). Writes the NLLs. */
static void run(kvc_model *model, const char *label, const char *policy, const char *policy_path,
                const int32_t *tokens, float *nll) {
  kvc_session *session = NULL;
  kvc_status st = create(model, policy, policy_path, "10", &session);
  CHECK(st == KVC_OK, "[%s] kvc_session_create(policy=%s): %s: %s", label, policy,
        kvc_status_name(st), kvc_last_error());
  if (st != KVC_OK) return;

  st = kvc_session_score(session, tokens, N_TOKENS, NULL, nll, N_TOKENS - 1);
  CHECK(st == KVC_OK, "[%s] kvc_session_score: %s: %s", label, kvc_status_name(st),
        kvc_last_error());

  kvc_cache_stats stats;
  kvc_cache_stats_init(&stats);
  st = kvc_session_cache_stats(session, &stats);
  CHECK(st == KVC_OK, "[%s] kvc_session_cache_stats: %s", label, kvc_last_error());
  CHECK(stats.capacity == BUDGET, "[%s] capacity %lld, expected the budget %d", label,
        (long long)stats.capacity, BUDGET);
  CHECK(stats.n_tokens_seen == N_TOKENS, "[%s] %lld tokens seen", label,
        (long long)stats.n_tokens_seen);
  CHECK(stats.n_evictions > 0, "[%s] the policy never evicted", label);

  int differing_heads = 0;
  int64_t first_middle[2] = {-1, -1};
  for (int32_t layer = 0; layer < stats.n_layers; ++layer) {
    for (int32_t head = 0; head < stats.n_heads; ++head) {
      int64_t positions[N_TOKENS];
      size_t n = 0;
      st = kvc_session_cache_entries(session, layer, head, positions, NULL, N_TOKENS, &n);
      CHECK(st == KVC_OK, "[%s] kvc_session_cache_entries(%d, %d): %s", label, layer, head,
            kvc_last_error());
      if (st != KVC_OK) continue;
      /* Evicted at every step once over budget, so exactly `budget` entries remain. */
      CHECK(n == BUDGET, "[%s] (layer %d, head %d) holds %zu entries, budget %d", label, layer,
            head, n, BUDGET);
      if (n != BUDGET) continue;
      for (int i = 0; i < START; ++i)
        CHECK(positions[i] == i, "[%s] (layer %d, head %d) sink %d is position %lld", label,
              layer, head, i, (long long)positions[i]);
      for (int i = 0; i < RECENT; ++i)
        CHECK(positions[BUDGET - RECENT + i] == N_TOKENS - RECENT + i,
              "[%s] (layer %d, head %d) recent entry %d is position %lld", label, layer, head,
              i, (long long)positions[BUDGET - RECENT + i]);
      for (size_t i = 1; i < n; ++i)
        CHECK(positions[i] > positions[i - 1], "[%s] (layer %d, head %d) positions not in "
              "age order at rank %zu", label, layer, head, i);
      /* Per-head selection: note whether heads chose different middles. */
      if (first_middle[0] < 0) {
        first_middle[0] = positions[START];
        first_middle[1] = positions[START + 1];
      } else if (positions[START] != first_middle[0] || positions[START + 1] != first_middle[1]) {
        ++differing_heads;
      }
    }
  }
  printf("run_plugin: [%s] ok: %d layers x %d heads hold %d entries each after %d tokens, "
         "%lld evictions, %d heads chose a different middle than (0, 0)\n",
         label, stats.n_layers, stats.n_heads, BUDGET, N_TOKENS, (long long)stats.n_evictions,
         differing_heads);
  kvc_session_free(session);
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: run_plugin <model> <plugin .so path> <plugin folder> "
                    "[<installed plugin .so path>]\n");
    return 2;
  }
  const char *model_path = argv[1], *plugin = argv[2], *folder = argv[3];
  const char *env = getenv("KVC_POLICY_PATH");
  if (!env || strcmp(env, folder) != 0) {
    fprintf(stderr, "run_plugin: KVC_POLICY_PATH must be set to %s\n", folder);
    return 2;
  }

  kvc_model *model = NULL;
  kvc_model_options mo;
  kvc_model_options_init(&mo);
  mo.backend = KVC_BACKEND_CPU;
  mo.n_threads = 1;
  if (kvc_model_load(model_path, &mo, &model) != KVC_OK) {
    fprintf(stderr, "run_plugin: cannot load %s: %s\n", model_path, kvc_last_error());
    return 1;
  }
  kvc_model_info info;
  kvc_model_info_init(&info);
  kvc_model_get_info(model, &info);

  int32_t tokens[N_TOKENS];
  uint32_t state = 12345u;
  for (int i = 0; i < N_TOKENS; ++i) {
    state = state * 1664525u + 1013904223u;
    tokens[i] = (int32_t)((state >> 8) % (uint32_t)info.vocab_size);
  }

  float nll_path[N_TOKENS - 1], nll_session[N_TOKENS - 1], nll_env[N_TOKENS - 1];
  memset(nll_path, 0, sizeof nll_path);
  memset(nll_session, 0, sizeof nll_session);
  memset(nll_env, 0, sizeof nll_env);
  run(model, "by path", plugin, NULL, tokens, nll_path);
  run(model, "by name, session policy_path", "keynorm", folder, tokens, nll_session);
  run(model, "by name, KVC_POLICY_PATH", "keynorm", NULL, tokens, nll_env);
  /* The same plugin, loaded three ways, must give the same results bit for bit. */
  for (int i = 0; i < N_TOKENS - 1; ++i) {
    CHECK(isfinite(nll_path[i]) && nll_path[i] > 0.0f, "nll[%d] = %g", i, nll_path[i]);
    CHECK(nll_path[i] == nll_session[i] && nll_path[i] == nll_env[i],
          "nll[%d]: by path %.9g, by policy_path %.9g, by KVC_POLICY_PATH %.9g", i,
          nll_path[i], nll_session[i], nll_env[i]);
  }

  /* The plugin's own check (budget >= start_size + recent_size) reaches the caller. */
  kvc_session *bad = NULL;
  kvc_status st = create(model, "keynorm", folder, "5", &bad);
  CHECK(st != KVC_OK, "a budget below start_size + recent_size was accepted");
  CHECK(strstr(kvc_last_error(), "budget") != NULL,
        "the message should name the budget: '%s'", kvc_last_error());
  if (st == KVC_OK) kvc_session_free(bad);
  else printf("run_plugin: bad budget rejected: %s: %s\n", kvc_status_name(st), kvc_last_error());

  /* Listed with its parameter schema, from KVC_POLICY_PATH: that folder comes before kvc's
   * own, so this copy shadows any installed one. */
  char plugin_real[PATH_MAX], listed_real[PATH_MAX];
  CHECK(realpath(plugin, plugin_real) != NULL, "%s does not exist", plugin);
  kvc_policy_list *list = NULL;
  st = kvc_policy_list_load(NULL, &list);
  CHECK(st == KVC_OK, "kvc_policy_list_load: %s", kvc_last_error());
  if (st == KVC_OK) {
    const kvc_policy_info *found = NULL;
    for (size_t i = 0; i < kvc_policy_list_size(list); ++i) {
      const kvc_policy_info *p = kvc_policy_list_get(list, i);
      if (strcmp(p->name, "keynorm") == 0) found = p;
    }
    CHECK(found != NULL, "keynorm is not listed; errors: %s", kvc_policy_list_errors(list));
    if (found) {
      CHECK(found->n_params == 3 && strcmp(found->params[2].name, "budget") == 0 &&
                found->params[2].type == KVC_PARAM_INT,
            "keynorm lists %zu parameters", found->n_params);
      CHECK(realpath(found->path, listed_real) != NULL && strcmp(listed_real, plugin_real) == 0,
            "with KVC_POLICY_PATH=%s keynorm should come from %s, not %s", folder, plugin,
            found->path);
      printf("run_plugin: listed %s %s from %s\n", found->name, found->version, found->path);
    }
    kvc_policy_list_free(list);
  }

  if (argc == 5) {
    /* No policy_path, no KVC_POLICY_PATH: the name must resolve next to libkvc.so. */
    unsetenv("KVC_POLICY_PATH");
    float nll_installed[N_TOKENS - 1];
    memset(nll_installed, 0, sizeof nll_installed);
    run(model, "by name, installed beside libkvc", "keynorm", NULL, tokens, nll_installed);
    for (int i = 0; i < N_TOKENS - 1; ++i)
      CHECK(nll_installed[i] == nll_path[i], "nll[%d]: installed copy %.9g, by path %.9g", i,
            nll_installed[i], nll_path[i]);
    char expected[PATH_MAX], found_at[PATH_MAX];
    CHECK(realpath(argv[4], expected) != NULL, "the installed plugin %s does not exist", argv[4]);
    st = kvc_policy_list_load(NULL, &list);
    CHECK(st == KVC_OK, "kvc_policy_list_load(NULL): %s", kvc_last_error());
    if (st == KVC_OK) {
      const kvc_policy_info *found = NULL;
      for (size_t i = 0; i < kvc_policy_list_size(list); ++i)
        if (strcmp(kvc_policy_list_get(list, i)->name, "keynorm") == 0)
          found = kvc_policy_list_get(list, i);
      CHECK(found != NULL && realpath(found->path, found_at) != NULL &&
                strcmp(found_at, expected) == 0,
            "keynorm should be listed from %s, found %s", expected,
            found ? found->path : "nothing");
      if (found) printf("run_plugin: without a search path, keynorm resolves to %s\n", found->path);
      kvc_policy_list_free(list);
    }
  }

  kvc_model_free(model);
  if (failures) {
    fprintf(stderr, "run_plugin: %d check(s) failed\n", failures);
    return 1;
  }
  printf("run_plugin: all checks passed\n");
  return 0;
}
