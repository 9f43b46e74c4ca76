#include "task_runs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "figure.h"
#include "interrupt.h"
#include "progress.h"
#include "report.h"
#include "summary.h"
#include "tasks.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {

namespace {

namespace t = tasks;

struct TaskSettings {
  std::string task;  // passkey | needle | copy
  std::vector<int64_t> lengths, depths;  // depths in percent; copy: lengths are the gaps
  int64_t samples = 1;
  uint64_t seed = 0;
  t::NeedleOptions needle;
  int64_t span = 16;
};

// One method's results: the instances and the per-cell means.
struct MethodResult {
  std::string label, display;
  std::vector<double> cell_score;  // [depth][length] (copy: [0][gap], token accuracy)
  std::vector<double> cell_exact;  // copy: exact-match rate per gap
  double mean = 0;
  int64_t instances = 0;
  bool interrupted = false;
};

uint64_t task_code(const std::string& task) {
  return task == "passkey" ? 1 : task == "needle" ? 2 : 3;
}

// The largest rotary position a run of `tokens` uses under `spec`: shift keeps positions below
// the capacity; the full cache and original positions use the text's.
bool extrapolates(int64_t tokens, int64_t capacity, const RunSpec& spec, int64_t max_pos) {
  const bool shift_bounded = capacity >= 0 && spec.positions == KVC_POSITIONS_SHIFT;
  return (shift_bounded ? std::min(tokens, capacity + 1) : tokens) > max_pos;
}

MethodResult run_method(const std::string& program, const TaskSettings& ts,
                        const PlannedRun& planned, const LoadedModel& model,
                        const kvc_tokenizer* tokenizer, const t::Filler& filler,
                        const std::vector<int32_t>& pool, const Inputs& in,
                        const Options& options, const fs::path& output_dir) {
  const EvalRun& run = planned.run;
  const bool copy = ts.task == "copy";
  const t::Tokenize tokenize = t::tokenizer_function(tokenizer);
  const int64_t longest = *std::max_element(ts.lengths.begin(), ts.lengths.end());
  // The full cache holds the whole prompt and answer.
  const int64_t max_entries =
      run.protocol == Protocol::Dense ? (copy ? longest + 4 * ts.span : longest) + 256 : 0;
  SessionPtr session = make_session(model.model.get(), run.spec, max_entries);
  const json report = policy_report(session.get());
  std::fprintf(stderr, "%s: %s: %s\n", program.c_str(), run.label.c_str(),
               variant_summary(report, run.spec).c_str());
  const int64_t capacity = report.value("capacity", int64_t{-1});
  const int64_t max_pos = model.info.max_position_embeddings;

  const std::vector<int64_t> depths = copy ? std::vector<int64_t>{0} : ts.depths;
  MethodResult result;
  result.label = run.label;
  result.display = run.display;
  result.cell_score.assign(depths.size() * ts.lengths.size(), 0.0);
  result.cell_exact.assign(depths.size() * ts.lengths.size(), 0.0);
  json instances = json::array();
  Progress progress(run.label, static_cast<int64_t>(depths.size() * ts.lengths.size()) *
                                   ts.samples,
                    "inst");
  double total = 0;
  for (size_t d = 0; d < depths.size() && !result.interrupted; ++d) {
    for (size_t l = 0; l < ts.lengths.size() && !result.interrupted; ++l) {
      double cell = 0, exact = 0;
      int64_t done_in_cell = 0;
      for (int64_t s = 0; s < ts.samples; ++s) {
        const uint64_t seed = t::derive_seed(
            ts.seed, {task_code(ts.task), static_cast<uint64_t>(ts.lengths[l]),
                      static_cast<uint64_t>(depths[d]), static_cast<uint64_t>(s)});
        t::Instance inst;
        try {
          const double depth = static_cast<double>(depths[d]) / 100.0;
          if (ts.task == "passkey")
            inst = t::make_passkey(tokenize, filler, ts.lengths[l], depth, seed);
          else if (ts.task == "needle")
            inst = t::make_needle(tokenize, filler, ts.needle, ts.lengths[l], depth, seed);
          else
            inst = t::make_copy(tokenize, filler, pool, ts.span, ts.lengths[l], seed);
        } catch (const std::invalid_argument& e) {
          throw UsageError("--task " + ts.task + " at length " + std::to_string(ts.lengths[l]) +
                           ": " + e.what());
        }
        check(kvc_session_reset(session.get()), "resetting the session");
        json record = inst.describe();
        record["sample"] = s;
        const int64_t tokens =
            static_cast<int64_t>(inst.prompt.size() + inst.answer.size());
        record["extrapolated"] = extrapolates(tokens, capacity, run.spec, max_pos);
        try {
          if (copy) {
            const t::CopyScore c = t::run_copy(model.model.get(), session.get(), inst);
            record["mean_nll"] = c.mean_nll;
            record["token_accuracy"] = c.token_accuracy;
            record["exact_match"] = c.exact_match;
            cell += c.token_accuracy;
            exact += c.exact_match ? 1.0 : 0.0;
          } else {
            const std::string answer = t::answer_greedy(session.get(), inst);
            const t::Score sc = ts.task == "passkey" ? t::score_passkey(inst, answer)
                                                     : t::score_needle(inst, answer);
            record["generated"] = answer;
            record["parsed"] = sc.parsed;
            record["score"] = sc.score;
            cell += sc.score;
            exact += sc.correct ? 1.0 : 0.0;
          }
        } catch (const std::runtime_error& e) {
          throw RunError(run.label + ": " + ts.task + " instance (length " +
                         std::to_string(ts.lengths[l]) + ", depth " +
                         std::to_string(depths[d]) + "%, sample " + std::to_string(s) +
                         "): " + e.what());
        }
        instances.push_back(std::move(record));
        ++done_in_cell;
        ++result.instances;
        progress.update(result.instances, run.label);
        if (interrupted()) {
          result.interrupted = true;
          break;
        }
      }
      const size_t cell_index = d * ts.lengths.size() + l;
      result.cell_score[cell_index] =
          done_in_cell ? cell / static_cast<double>(done_in_cell) : NAN;
      result.cell_exact[cell_index] =
          done_in_cell ? exact / static_cast<double>(done_in_cell) : NAN;
      total += cell;
    }
  }
  result.mean = result.instances ? total / static_cast<double>(result.instances) : NAN;
  progress.finish(result.instances, format_fixed(result.mean, 3));

  json cells = json::array();
  for (size_t d = 0; d < depths.size(); ++d)
    for (size_t l = 0; l < ts.lengths.size(); ++l) {
      const size_t i = d * ts.lengths.size() + l;
      json c = {{copy ? "gap" : "length", ts.lengths[l]}};
      if (!copy) c["depth_percent"] = depths[d];
      c[copy ? "token_accuracy" : "score"] = result.cell_score[i];
      c[copy ? "exact_match" : "accuracy"] = result.cell_exact[i];
      cells.push_back(std::move(c));
    }
  json engine = in.engine;
  const json out = {{"task", ts.task},
                    {"mode", run.label},
                    {copy ? "token_accuracy" : "score", result.mean},
                    {"num_instances", result.instances},
                    {"interrupted", result.interrupted},
                    {"policy", run.spec.policy},
                    {"variant", variant_summary(report, run.spec)},
                    {"policy_report", report},
                    {"positions", run.spec.positions_name()},
                    {"cells", cells},
                    {"instances", instances},
                    {"engine", engine},
                    {"model", in.model},
                    {"settings", settings_json(options)}};
  const fs::path path = output_dir / ("task_" + ts.task + "_" + run.label + ".json");
  write_json(path, out);
  std::printf("%s: %s %s %.3f over %lld instances%s -> %s\n", run.display.c_str(),
              ts.task.c_str(), copy ? "token accuracy" : "score", result.mean,
              static_cast<long long>(result.instances),
              result.interrupted ? " (interrupted)" : "", path.string().c_str());
  std::fflush(stdout);
  return result;
}

Figure task_figure(const TaskSettings& ts, const std::vector<MethodResult>& results,
                   const std::string& caption) {
  Figure f;
  const bool copy = ts.task == "copy";
  f.caption = caption + "; " + (copy ? "share of the second copy's tokens predicted (argmax)"
                                     : "mean score") +
              " over " + std::to_string(ts.samples) + " instances per cell";
  if (copy) {
    f.title = "Copy: token accuracy against the gap";
    Panel p;
    p.xlabel = "gap between the two copies (tokens)";
    p.ylabel = "token accuracy of the second copy";
    p.y_from_zero = true;
    for (const MethodResult& r : results) {
      Series s;
      s.name = r.display;
      for (size_t l = 0; l < ts.lengths.size(); ++l) {
        s.x.push_back(static_cast<double>(ts.lengths[l]));
        s.y.push_back(r.cell_score[l]);
      }
      p.series.push_back(std::move(s));
    }
    f.panels.push_back(std::move(p));
    return f;
  }
  f.title = (ts.task == "passkey" ? std::string("Passkey retrieval")
                                  : "Needle in a haystack (" + ts.needle.variant + ")") +
            ": accuracy by context length and depth";
  for (const MethodResult& r : results) {
    Panel p;
    p.title = r.display;
    p.xlabel = "context length (tokens)";
    p.ylabel = "depth of the key (%)";
    HeatMap h;
    for (int64_t l : ts.lengths) h.x_labels.push_back(std::to_string(l));
    for (int64_t d : ts.depths) h.y_labels.push_back(std::to_string(d));
    h.values = r.cell_score;
    h.scale_label = "accuracy";
    p.heat_map = std::move(h);
    f.panels.push_back(std::move(p));
  }
  return f;
}

}  // namespace

bool run_tasks(const std::string& program, const Options& options, const Plan& plan,
               const LoadedModel& model, const kvc_tokenizer* tokenizer, const Inputs& in,
               const fs::path& output_dir) {
  TaskSettings ts;
  ts.task = options.get_string("eval", "task");
  ts.lengths = options.get_int_list("eval", "task_lengths");
  ts.depths = options.get_int_list("eval", "task_depths");
  ts.samples = options.get_int("eval", "task_samples");
  ts.seed = static_cast<uint64_t>(options.get_int("eval", "task_seed"));
  ts.needle.variant = options.get_string("eval", "needle");
  ts.span = options.get_int("eval", "copy_span");
  const t::Tokenize tokenize = t::tokenizer_function(tokenizer);
  const t::Filler filler =
      options.get_string("eval", "filler") == "text"
          ? t::text_filler(tokenize, t::read_text_folder(in.data_dir), "text")
          : t::repeat_filler(tokenize);
  const std::vector<int32_t> pool =
      ts.task == "copy" ? t::word_pool(tokenizer) : std::vector<int32_t>{};

  std::vector<MethodResult> results;
  bool stopped = false;
  for (const PlannedRun& planned : plan.runs) {
    const Protocol p = planned.run.protocol;
    if (p != Protocol::Stream && p != Protocol::Dense) continue;
    results.push_back(run_method(program, ts, planned, model, tokenizer, filler, pool, in,
                                 options, output_dir));
    if (results.back().interrupted) {
      stopped = true;
      break;
    }
  }
  if (results.empty())
    throw UsageError("--task " + ts.task + ": no method to run (the chunked and sliding "
                     "baselines score text; use --baseline dense for the full cache)");

  // Table: one row per method, the mean per length (over depths), and overall.
  const bool copy = ts.task == "copy";
  std::vector<std::string> header = {"Method"};
  for (int64_t l : ts.lengths) header.push_back((copy ? "gap " : "") + std::to_string(l));
  header.push_back("All");
  std::vector<std::vector<std::string>> rows;
  for (const MethodResult& r : results) {
    std::vector<std::string> row = {r.display};
    const size_t n_depths = copy ? 1 : ts.depths.size();
    for (size_t l = 0; l < ts.lengths.size(); ++l) {
      double sum = 0;
      size_t n = 0;
      for (size_t d = 0; d < n_depths; ++d) {
        const double v = r.cell_score[d * ts.lengths.size() + l];
        if (std::isfinite(v)) sum += v, ++n;
      }
      row.push_back(n ? format_fixed(sum / static_cast<double>(n), 2) : "");
    }
    row.push_back(format_fixed(r.mean, 3));
    rows.push_back(std::move(row));
  }
  std::string md = markdown_table(header, rows);
  md += "\n- " + std::string(copy ? "token accuracy of the second copy (argmax), mean over "
                                  : "score (1 = right), mean over depths ") +
        (copy ? "" : "{") +
        [&] {
          std::string d;
          for (size_t i = 0; !copy && i < ts.depths.size(); ++i)
            d += (i ? ", " : "") + std::to_string(ts.depths[i]) + "%";
          return d;
        }() +
        (copy ? "" : "} and ") + std::to_string(ts.samples) + " instances per cell\n";
  if (stopped) md += "- interrupted: the methods after the last row did not run\n";
  const fs::path table = output_dir / ("task_" + ts.task + "_table.md");
  write_file_atomic(table, md);
  std::printf("\n%s\n(table written to %s)\n", md.c_str(), table.string().c_str());
  if (options.get_bool("eval", "figures"))
    draw(program, output_dir / ("task_" + ts.task), task_figure(ts, results, in.caption));
  return stopped;
}

}  // namespace kvc::hosts
