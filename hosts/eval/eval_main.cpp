// kvc-eval: perplexity of a model under KV-cache eviction policies (docs/policies.md §6,
// docs/hosts.md). Reads top-down: settings -> the runs (plan.h) -> model and texts -> each run
// scored and written (record.h, outputs.h) -> the summary (summary.h). --shard, --worker and
// --merge split the same work across processes and machines (shards.h, docs/scale-out.md).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "files.h"
#include "interrupt.h"
#include "options.h"
#include "outputs.h"
#include "plan.h"
#include "program.h"
#include "record.h"
#include "report.h"
#include "runtime.h"
#include "schema.h"
#include "scoring.h"
#include "shards.h"
#include "summary.h"
#include "task_runs.h"
#include "texts.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {
namespace {

constexpr const char* kProgram = "kvc-eval";

// Everything loaded once: the runs, the model, the texts and what the results record.
struct Session {
  Plan plan;
  LoadedModel model;
  TokenizerPtr own_tokenizer;
  Inputs in;
  const kvc_tokenizer* tokenizer = nullptr;  // the model's, or --tokenizer
  std::vector<std::vector<int64_t>> counts;  // tokens each run scores of each text
  std::optional<RunSpec> dense;              // --compare_to dense
};

std::string default_data_dir(const Options& options) {
  std::string data_dir = options.get_string("eval", "data_dir");
  if (data_dir == kDefaultDataDir)
    data_dir = resolve_resource(data_dir, "the evaluation text",
                                "Prepare it with scripts/prepare_kjv.sh (installed in "
                                "share/kvc/scripts), or give a folder of .txt files with "
                                "--data_dir.")
                   .string();
  return data_dir;
}

void load(Session& s, const Options& options, const PolicyCatalog& catalog,
          const std::string& data_dir) {
  s.model = load_model(options, static_cast<uint64_t>(options.get_int("model", "seed")));
  const kvc_tokenizer* tokenizer = kvc_model_tokenizer(s.model.model.get());
  if (auto path = options.get_opt_string("model", "tokenizer")) {
    kvc_tokenizer* t = nullptr;
    check(kvc_tokenizer_load(path->c_str(), &t), "loading tokenizer '" + *path + "'");
    s.own_tokenizer.reset(t);
    tokenizer = t;
  }
  if (!tokenizer)
    throw RunError("model '" + s.model.path + "' has no tokenizer.json; give one with "
                   "--tokenizer");
  s.tokenizer = tokenizer;
  std::vector<std::string> warnings;
  plan_sweep(s.plan, options, catalog, s.model.model.get(), warnings);
  for (const auto& w : warnings) warn(kProgram, w);
  s.in = describe_inputs(options, s.model,
                         load_texts(kProgram, data_dir, options.get_int("eval", "num_samples"),
                                    tokenizer, s.model.info.vocab_size),
                         data_dir);
  const auto cap = options.get_opt_int("eval", "num_eval_tokens");
  for (const auto& planned : s.plan.runs)
    s.counts.push_back(score_counts(s.in.texts.texts, cap, planned.run.protocol,
                                    s.plan.protocols.chunk_size));
  if (s.plan.compare) s.dense = make_run(options, catalog, "baseline", false, nullptr);
}

// Runs every planned run (or, for a shard, its items) and writes the results; returns whether
// a signal interrupted the work.
bool run_all(Session& s, const Options& options, const fs::path& output_dir,
             const std::optional<ShardSpec>& shard, const std::vector<WorkItem>& items) {
  const auto trace_every = options.get_int("eval", "trace_cache");
  const auto trace_heads = parse_trace_heads(options.get_string("eval", "trace_heads"),
                                             s.model.info.n_layers, s.model.info.n_heads);
  const bool save_nll = options.get_bool("eval", "save_nll");
  const bool figures = options.get_bool("eval", "figures") && !shard;
  const std::string suffix = shard ? shard->suffix() : "";
  const auto& budgets = s.plan.budgets;
  std::vector<RunOutcome> outcomes;
  bool stopped = false;
  for (size_t r = 0; r < s.plan.runs.size() && !stopped; ++r) {
    const PlannedRun& planned = s.plan.runs[r];
    const EvalRun& run = planned.run;
    // A shard scores only its items' files.
    std::vector<int64_t> counts = s.counts[r];
    if (shard) {
      std::vector<bool> mine(counts.size(), false);
      bool any = false;
      for (const WorkItem& item : items) {
        if (item.run != r || item.shard != shard->index) continue;
        any = true;
        if (item.file < 0) std::fill(mine.begin(), mine.end(), true);
        else mine[static_cast<size_t>(item.file)] = true;
      }
      if (!any) continue;
      for (size_t f = 0; f < counts.size(); ++f)
        if (!mine[f]) counts[f] = 0;
    }
    const bool streamed = run.protocol == Protocol::Stream || run.protocol == Protocol::Dense;
    std::unique_ptr<NllDump> dump;
    if (save_nll)
      dump = std::make_unique<NllDump>(output_dir / ("nll_" + run.label + suffix + ".tsv"),
                                       s.plan.compare && run.protocol == Protocol::Stream);
    std::unique_ptr<CacheTrace> trace;
    if (trace_every > 0 && streamed)
      trace = std::make_unique<CacheTrace>(
          output_dir / ("cache_trace_" + run.label + suffix + ".jsonl"), s.model.info,
          trace_heads);
    RunOutcome out;
    // The loss figure shows the runs that are not part of a sweep, and the sweep's runs at its
    // largest budget.
    out.in_loss_figure =
        !planned.budget || *planned.budget == *std::max_element(budgets.begin(), budgets.end());
    ScoreHooks hooks;
    hooks.program = kProgram;
    hooks.sink = [&](const TokenRecord& rec) {
      if (dump) dump->add(rec, s.in.texts.texts[rec.file].path.filename().string());
      out.loss.add(rec);
    };
    if (trace) {
      hooks.trace_every = trace_every;
      hooks.on_trace = [&](const kvc_session* session, size_t file, int64_t step) {
        trace->capture(session, s.in.texts.texts[file].path.filename().string(), step);
      };
    }
    if (s.dense && run.protocol == Protocol::Stream) hooks.compare_to = &*s.dense;

    const RunResult result =
        score_run(s.model, run, s.in.texts.texts, counts, s.plan.protocols, hooks);
    stopped = result.interrupted;
    if (dump) dump->commit();
    if (trace) trace->commit();
    json record = result_json(planned, result, s.plan, s.in, options);
    if (shard) {
      record["shard"] = {{"index", shard->index}, {"count", shard->count}};
      record["loss_by_position"] = out.loss.json();
    }
    out.label = run.label;
    out.display = run.display;
    out.protocol = run.protocol;
    out.budget = planned.budget;
    out.capacity = planned.capacity;
    out.total = result.total;
    out.n_files = result.files.size();
    out.wall_s = result.wall_s;
    out.interrupted = result.interrupted;
    out.path = output_dir / ("ppl_results_" + run.label + suffix + ".json");
    write_json(out.path, record);
    print_run_line(out);
    if (trace && figures && !trace_heads.empty()) {
      Figure f;
      f.title = "Kept cache entries, " + run.display;
      f.caption = s.in.caption + "; every " + std::to_string(trace_every) + " tokens";
      f.panels = trace->panels();
      draw(kProgram, output_dir / ("cache_trace_" + run.label), f);
    }
    outcomes.push_back(std::move(out));
  }
  if (shard) {
    // The manifest marks the shard complete: an interrupted shard has none.
    if (!stopped)
      write_manifest(output_dir, *shard, options, s.plan, s.in, items, s.in.caption,
                     s.model.info.max_position_embeddings);
    return stopped;
  }
  SummarySettings settings;
  settings.output_dir = output_dir;
  settings.all = s.plan.all;
  settings.compare = s.plan.compare;
  settings.figures = figures;
  settings.loss_window = options.get_int("eval", "loss_window");
  settings.max_position_embeddings = s.model.info.max_position_embeddings;
  settings.caption = s.in.caption;
  write_summary(kProgram, outcomes, settings, stopped);
  return stopped;
}

// --worker: one loaded session serves shards named on stdin, one "I/N" per line, and answers
// "done I/N" (or "error I/N: message") on stdout. Drivers (the Ray driver) keep one per node.
int serve(Session& s, const Options& options, const fs::path& output_dir) {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    try {
      const ShardSpec shard = parse_shard(line, "worker input");
      std::vector<WorkItem> items = work_items(s.plan, s.counts);
      assign_shards(items, shard.count);
      if (run_all(s, options, output_dir, shard, items)) return interrupted_exit_status();
      std::printf("done %s\n", line.c_str());
    } catch (const std::exception& e) {
      std::printf("error %s: %s\n", line.c_str(), e.what());
    }
    std::fflush(stdout);
  }
  return 0;
}

int run_eval(Options& options) {
  install_interrupt_handlers();
  const auto merge_dirs = options.get_path_list("eval", "merge");
  if (!merge_dirs.empty()) return merge_shards(kProgram, merge_dirs, options);

  Session s;
  std::vector<std::string> warnings;
  PolicyCatalog catalog(options.get_opt_string("policy", "search_path").value_or(""));
  s.plan = plan_runs(options, catalog, warnings);
  for (const auto& w : warnings) warn(kProgram, w);
  std::optional<ShardSpec> shard;
  if (auto text = options.get_opt_string("eval", "shard"))
    shard = parse_shard(*text, options.origin("eval", "shard"));

  const std::string task = options.get_string("eval", "task");
  if (task != "ppl")
    for (const char* key : {"shard", "list_items", "worker"})
      if (options.is_set("eval", key))
        throw UsageError(options.origin("eval", key) + " applies to --task ppl; the " + task +
                         " task runs in one process");

  const std::string data_dir = default_data_dir(options);
  list_text_files(data_dir);  // a missing or empty folder is reported before the model loads
  const bool list_items = options.get_bool("eval", "list_items");
  std::optional<OutputDir> output;
  if (!list_items)  // checked before hours of work, not after
    output.emplace(options.get_string("eval", "output_dir"),
                   options.origin("eval", "output_dir"));
  load(s, options, catalog, data_dir);

  if (task != "ppl") {
    if (run_tasks(kProgram, options, s.plan, s.model, s.tokenizer, s.in, output->path())) {
      warn(kProgram, "interrupted: the results so far are written, marked \"interrupted\"");
      return interrupted_exit_status();
    }
    return 0;
  }
  std::vector<WorkItem> items = work_items(s.plan, s.counts);
  assign_shards(items, shard ? shard->count : 1);
  if (list_items) {
    std::printf("%s\n", json{{"count", items.size()}, {"items", items_json(items, s.plan, s.in)}}
                            .dump(2)
                            .c_str());
    return 0;
  }
  if (options.get_bool("eval", "worker")) return serve(s, options, output->path());
  if (run_all(s, options, output->path(), shard, items)) {
    warn(kProgram, "interrupted: the results so far are written, marked \"interrupted\"");
    return interrupted_exit_status();
  }
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
