#include "plan.h"

#include <algorithm>

#include "modes.h"
#include "schema.h"

namespace kvc::hosts {

namespace {

bool given(const Options& options, const std::string& section, const std::string& key) {
  return options.source(section, key) == Source::CommandLine;
}

// A flag given on the command line that no planned run uses gets one warning that says which
// runs it is for (a config file may hold settings for other modes: it is not warned about).
void warn_unused_flags(const Options& options, const Plan& plan, const std::string& mode,
                       std::vector<std::string>& warnings) {
  auto uses = [&](Protocol p) {
    for (const auto& r : plan.runs)
      if (r.run.protocol == p) return true;
    return false;
  };
  const bool streamed = uses(Protocol::Stream) || uses(Protocol::Dense);
  const bool sliding = uses(Protocol::Sliding);
  struct Rule {
    const char* key;
    bool applies;
    const char* runs;
  };
  const Rule rules[] = {
      {"baseline", mode == "baseline" || mode == "all", "--mode baseline"},
      {"chunk_size", uses(Protocol::Chunked), "the chunked baseline"},
      {"window", sliding, "the sliding baseline (--baseline sliding)"},
      {"stride", sliding, "the sliding baseline (--baseline sliding)"},
      {"continuous_cache", streamed, "streamed runs (policies and --baseline dense)"},
      {"block_size", streamed, "streamed runs (policies and --baseline dense)"},
      {"trace_cache", streamed, "streamed runs (policies and --baseline dense)"},
      {"trace_heads", streamed && options.get_int("eval", "trace_cache") > 0,
       "--trace_cache N"},
      {"compare_to", uses(Protocol::Stream), "policy runs"},
  };
  const bool task = options.get_string("eval", "task") != "ppl";
  for (const char* key : {"save_nll", "trace_cache", "compare_to", "budgets", "block_size",
                          "continuous_cache", "num_eval_tokens", "num_samples"})
    if (task && given(options, "eval", key))
      warnings.push_back("--" + options.get(std::string("eval"), key).flag +
                         " is ignored: it applies to --task ppl");
  for (const char* key : {"task_lengths", "task_depths", "task_samples", "task_seed", "needle",
                          "filler", "copy_span"})
    if (!task && given(options, "eval", key))
      warnings.push_back("--" + options.get(std::string("eval"), key).flag +
                         " is ignored: it applies to --task passkey, needle or copy");
  if (task) return;
  for (const Rule& r : rules)
    if (given(options, "eval", r.key) && !r.applies)
      warnings.push_back("--" + options.get("eval", r.key).flag + " is ignored: it applies to " +
                         r.runs + ", and --mode " + mode + " has none");
  if (mode != "baseline") return;
  // The policy sizes: the baseline has none, except that start_size + recent_size set the
  // sliding window when --window is not given.
  for (const auto& key : seed_policy_keys()) {
    if (!given(options, "policy", key)) continue;
    const bool window = sliding && !options.get_opt_int("eval", "window") &&
                        (key == "start_size" || key == "recent_size");
    if (!window)
      warnings.push_back("--" + key + " is ignored: --mode baseline keeps the full cache" +
                         std::string(sliding ? "" : " (with --baseline sliding, start_size + "
                                                    "recent_size set the window)"));
  }
}

}  // namespace

Plan plan_runs(const Options& options, const PolicyCatalog& catalog,
               std::vector<std::string>& warnings) {
  Plan plan;
  const std::string mode = options.get_string("policy", "name");
  const std::string baseline = options.get_string("eval", "baseline");
  check_mode_tables(options, catalog);
  ProtocolSettings& p = plan.protocols;
  p.chunk_size = options.get_int("eval", "chunk_size");
  p.stride = options.get_int("eval", "stride");
  p.window = options.get_opt_int("eval", "window")
                 .value_or(options.get_int("policy", "start_size") +
                           options.get_int("policy", "recent_size"));
  p.continuous = options.get_bool("eval", "continuous_cache");
  p.block_size = static_cast<int32_t>(options.get_int("eval", "block_size"));
  plan.budgets = options.get_int_list("eval", "budgets");
  plan.compare = options.get_string("eval", "compare_to") == "dense";

  auto baseline_run = [&](Protocol protocol) {
    EvalRun run;
    run.spec = make_run(options, catalog, "baseline", false, nullptr);
    run.protocol = protocol;
    switch (protocol) {
      case Protocol::Chunked:
        run.label = "baseline";
        run.display = "baseline (" + std::to_string(p.chunk_size) + "-chunk)";
        break;
      case Protocol::Dense:
        run.label = "baseline_dense";
        run.display = "baseline (dense)";
        break;
      default:
        if (p.window < 1)
          throw UsageError("--window: the sliding baseline needs a window >= 1 (it defaults to "
                           "start_size + recent_size)");
        run.label = "baseline_sliding";
        run.display = "baseline (sliding " + std::to_string(p.window) + ", stride " +
                      std::to_string(p.stride) + ")";
    }
    return PlannedRun{std::move(run), std::nullopt, -1, {}};
  };
  auto policy_run = [&](const std::string& name, bool strict) {
    EvalRun run;
    run.spec = make_run(options, catalog, name, strict, &warnings);
    run.label = run.display = run.spec.mode;
    return PlannedRun{std::move(run), std::nullopt, -1, {}};
  };
  // The retrieval tasks compare against the full cache; the chunked and sliding baselines
  // score text only.
  const bool task = options.get_string("eval", "task") != "ppl";
  if (mode == "all") {
    plan.all = true;
    if (!task) plan.runs.push_back(baseline_run(Protocol::Chunked));
    plan.runs.push_back(baseline_run(Protocol::Dense));
    for (const auto& name : catalog.all_modes()) {
      if (name == "baseline") continue;
      if (plan.budgets.empty())
        plan.runs.push_back(policy_run(name, false));
      else
        plan.sweep_modes.push_back(name);
    }
  } else if (mode == "baseline") {
    if (!plan.budgets.empty())
      throw UsageError("--budgets: --mode baseline keeps the full cache; give a policy mode "
                       "or --mode all");
    plan.runs.push_back(baseline_run(baseline == "dense" || task ? Protocol::Dense
                                     : baseline == "sliding"     ? Protocol::Sliding
                                                                 : Protocol::Chunked));
  } else if (plan.budgets.empty()) {
    plan.runs.push_back(policy_run(mode, true));
  } else {
    make_run(options, catalog, mode, true, &warnings);  // its flags are checked now
    plan.sweep_modes.push_back(mode);
  }
  if (!plan.sweep_modes.empty()) {
    EvalRun placeholder;  // the scaled runs need the model; they are planned after loading it
    placeholder.protocol = Protocol::Stream;
    plan.runs.push_back({std::move(placeholder), 0, -1, {}});
  }
  warn_unused_flags(options, plan, mode, warnings);
  if (p.continuous && mode == "baseline" && baseline != "dense")
    warnings.push_back("--continuous_cache does not apply to the " + baseline + " baseline");
  return plan;
}

// The budget sweep's runs, one per (mode, budget), in place of the placeholder.
void plan_sweep(Plan& plan, const Options& options, const PolicyCatalog& catalog,
                kvc_model* model, std::vector<std::string>& warnings) {
  if (plan.sweep_modes.empty()) return;
  plan.runs.pop_back();
  const bool strict = plan.sweep_modes.size() == 1;
  for (const auto& mode : plan.sweep_modes) {
    for (int64_t budget : plan.budgets) {
      auto scaled = scale_to_budget(options, catalog, mode, model, budget, strict, &warnings);
      if (!scaled) {
        if (budget == plan.budgets.front())
          warnings.push_back("--budgets: mode '" + mode + "' has no size to scale; skipped");
        continue;
      }
      PlannedRun r;
      r.run.spec = std::move(scaled->spec);
      r.run.protocol = Protocol::Stream;
      r.run.label = mode + "_budget" + std::to_string(budget);
      r.run.display = mode;
      r.budget = budget;
      r.capacity = scaled->capacity;
      r.scaled_sizes = std::move(scaled->sizes);
      plan.runs.push_back(std::move(r));
    }
  }
}

}  // namespace kvc::hosts
