// kvc-eval: perplexity of a model under KV-cache eviction policies (docs/policies.md §6,
// docs/hosts.md). Reads top-down: settings -> the runs -> model and texts -> each run scored
// and written -> the summary table.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "files.h"
#include "modes.h"
#include "options.h"
#include "program.h"
#include "report.h"
#include "runtime.h"
#include "schema.h"
#include "scoring.h"
#include "texts.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {
namespace {

constexpr const char* kProgram = "kvc-eval";

// ---- 1. The runs, resolved and validated before anything is loaded ----------------------------

struct Plan {
  std::vector<EvalRun> runs;
  ProtocolSettings protocols;
  bool all = false;  // --mode all: also the summary table
};

Plan plan_runs(const Options& options) {
  Plan plan;
  std::vector<std::string> warnings;
  const std::string mode = options.get_string("policy", "name");
  const std::string baseline = options.get_string("eval", "baseline");
  PolicyCatalog catalog(options.get_opt_string("policy", "search_path").value_or(""));
  ProtocolSettings& p = plan.protocols;
  p.chunk_size = options.get_int("eval", "chunk_size");
  p.stride = options.get_int("eval", "stride");
  p.window = options.get_opt_int("eval", "window")
                 .value_or(options.get_int("policy", "start_size") +
                           options.get_int("policy", "recent_size"));
  p.continuous = options.get_bool("eval", "continuous_cache");
  p.block_size = static_cast<int32_t>(options.get_int("eval", "block_size"));

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
    return run;
  };
  auto policy_run = [&](const std::string& name, bool strict) {
    EvalRun run;
    run.spec = make_run(options, catalog, name, strict, &warnings);
    run.label = run.display = run.spec.mode;
    return run;
  };
  if (mode == "all") {
    plan.all = true;
    plan.runs.push_back(baseline_run(Protocol::Chunked));
    plan.runs.push_back(baseline_run(Protocol::Dense));
    for (const auto& name : catalog.all_modes())
      if (name != "baseline") plan.runs.push_back(policy_run(name, false));
  } else if (mode == "baseline") {
    plan.runs.push_back(baseline_run(baseline == "dense"     ? Protocol::Dense
                                     : baseline == "sliding" ? Protocol::Sliding
                                                             : Protocol::Chunked));
  } else {
    plan.runs.push_back(policy_run(mode, true));
  }
  if (p.continuous && mode == "baseline" && baseline != "dense")
    warnings.push_back("--continuous_cache does not apply to the " + baseline + " baseline");
  for (const auto& w : warnings) warn(kProgram, w);
  return plan;
}

// ---- 3. One run's result file and table row ---------------------------------------------------

json result_json(const EvalRun& run, const RunResult& result, const Plan& plan,
                 const Texts& texts, const LoadedModel& model, const Options& options,
                 const std::string& data_dir) {
  json config = run.spec.params_json();
  if (run.protocol == Protocol::Chunked) config["chunk_size"] = plan.protocols.chunk_size;
  if (run.protocol == Protocol::Sliding) {
    config["window"] = plan.protocols.window;
    config["stride"] = plan.protocols.stride;
  }
  json per_file = json::array();
  for (const auto& [index, tally] : result.files) {
    const Text& text = texts.texts[index];
    per_file.push_back({{"file", text.path.filename().string()},
                        {"path", text.path.string()},
                        {"num_tokens", tally.scored},
                        {"ppl", tally.ppl()},
                        {"nll_sum", tally.nll_sum},
                        {"cache_size", tally.cache_json()},
                        {"extrapolated_tokens", tally.extrapolated}});
  }
  json skipped = json::array();
  for (const auto& s : texts.skipped) skipped.push_back({{"file", s.path.string()}, {"reason", s.reason}});
  const double tokens_per_sec =
      result.wall_s > 0 ? static_cast<double>(result.total.scored) / result.wall_s : 0.0;
  const auto cap = options.get_opt_int("eval", "num_eval_tokens");
  const bool streamed = run.protocol == Protocol::Stream || run.protocol == Protocol::Dense;
  return {
      {"mode", run.label},
      {"ppl", result.total.ppl()},
      {"num_tokens", result.total.scored},
      {"num_samples", result.files.size()},
      {"config", config},
      {"policy", run.spec.policy},
      {"protocol", protocol_name(run.protocol)},
      {"positions", run.spec.positions_name()},
      {"continuous_cache", plan.protocols.continuous && streamed},
      {"scoring", {{"block_size", result.block_size},
                   {"path", result.path},
                   {"requested_block_size", streamed ? json(plan.protocols.block_size)
                                                     : json(nullptr)},
                   {"fallback_reason", result.path_reason}}},
      {"num_eval_tokens", cap ? json(*cap) : json(nullptr)},
      {"data_dir", data_dir},
      {"cache_size", result.total.cache_json()},
      {"extrapolated_tokens", result.total.extrapolated},
      {"tokens_per_sec", tokens_per_sec},
      {"wall_time_s", result.wall_s},
      {"model", model.describe()},
      {"skipped_files", skipped},
      {"num_skipped_files", texts.skipped.size()},
      {"files", per_file},
      {"settings", settings_json(options)},
  };
}

// ---- The program ------------------------------------------------------------------------------

int run_eval(Options& options) {
  const Plan plan = plan_runs(options);

  std::string data_dir = options.get_string("eval", "data_dir");
  if (data_dir == kDefaultDataDir)
    data_dir = resolve_resource(data_dir, "the evaluation text",
                                "Prepare it with scripts/prepare_kjv.sh (installed in "
                                "share/kvc/scripts), or give a folder of .txt files with "
                                "--data_dir.")
                   .string();
  list_text_files(data_dir);  // a missing or empty folder is reported before the model loads
  LoadedModel model = load_model(options, static_cast<uint64_t>(options.get_int("model", "seed")));
  TokenizerPtr own_tokenizer;
  const kvc_tokenizer* tokenizer = kvc_model_tokenizer(model.model.get());
  if (auto path = options.get_opt_string("model", "tokenizer")) {
    kvc_tokenizer* t = nullptr;
    check(kvc_tokenizer_load(path->c_str(), &t), "loading tokenizer '" + *path + "'");
    own_tokenizer.reset(t);
    tokenizer = t;
  }
  if (!tokenizer)
    throw RunError("model '" + model.path + "' has no tokenizer.json; give one with --tokenizer");
  const Texts texts = load_texts(kProgram, data_dir, options.get_int("eval", "num_samples"),
                                 tokenizer, model.info.vocab_size);

  const fs::path output_dir = options.get_string("eval", "output_dir");
  const auto cap = options.get_opt_int("eval", "num_eval_tokens");
  std::vector<std::vector<std::string>> table;
  std::vector<std::string> notes;
  for (const auto& run : plan.runs) {
    const auto counts = score_counts(texts.texts, cap, run.protocol, plan.protocols.chunk_size);
    const RunResult result = score_run(model, run, texts.texts, counts, plan.protocols, {});
    const fs::path path = output_dir / ("ppl_results_" + run.label + ".json");
    write_json(path, result_json(run, result, plan, texts, model, options, data_dir));

    const Tally& t = result.total;
    const double tokens_per_sec = result.wall_s > 0 ? static_cast<double>(t.scored) / result.wall_s
                                                    : 0.0;
    std::printf("%s: ppl %.4f over %lld tokens (%zu files), cache max %lld mean %.1f, "
                "%.1f tok/s -> %s\n",
                run.display.c_str(), t.ppl(), static_cast<long long>(t.scored),
                result.files.size(), static_cast<long long>(t.cache_max), t.cache_mean(),
                tokens_per_sec, path.string().c_str());
    std::fflush(stdout);
    table.push_back({run.display, format_fixed(t.ppl(), 3), std::to_string(t.cache_max),
                     format_fixed(t.cache_mean(), 1), format_fixed(tokens_per_sec, 1)});
    if (t.extrapolated > 0)
      notes.push_back(run.display + ": " + std::to_string(t.extrapolated) + " of " +
                      std::to_string(t.scored) + " scored tokens were predicted at positions >= "
                      "max_position_embeddings (" +
                      std::to_string(model.info.max_position_embeddings) + "): extrapolation");
  }

  if (!plan.all) {
    for (const auto& note : notes) std::printf("note: %s\n", note.c_str());
    return 0;
  }
  std::string md = markdown_table({"Method", "PPL", "Cache max", "Cache mean", "Tokens/s"}, table);
  for (const auto& note : notes) md += "\n- " + note;
  if (!notes.empty()) md += "\n";
  const fs::path path = output_dir / "ppl_results_table.md";
  write_file_atomic(path, md);
  std::printf("\n%s\n(table written to %s)\n", md.c_str(), path.string().c_str());
  return 0;
}

}  // namespace
}  // namespace kvc::hosts

int main(int argc, char** argv) {
  return kvc::hosts::program_main(
      kvc::hosts::Program::Eval,
      "[--mode MODE] [options]\n\nPerplexity of a model under a KV-cache policy (docs/hosts.md).",
      argc, argv, kvc::hosts::run_eval);
}
