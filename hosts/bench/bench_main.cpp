// kvc-bench: decode latency against sequence length under KV-cache policies
// (docs/policies.md §7, the seed's protocol).
//
// For each sequence length S: random token ids (100 <= id < vocab - 100, from the seed), S - 1
// of them prefilled in one batch (the policy is applied once), one more step to reach S, then
// N timed single-token decode steps, each including the policy's bookkeeping and eviction.
// kvc_session_step returns once the logits are on the host, so the clock is read after the
// device has finished the step. Greedy decoding picks each next token, as a real decode would.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include "figure.h"
#include "files.h"
#include "interrupt.h"
#include "options.h"
#include "program.h"
#include "progress.h"
#include "provenance.h"
#include "report.h"
#include "runtime.h"
#include "schema.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {
namespace {

constexpr const char* kProgram = "kvc-bench";

struct Plan {
  RunSpec spec;
  json report;  // kvc_session_policy_report: the variant that runs
  std::vector<int64_t> seq_lengths;  // after dropping default lengths the policy cannot run
  std::vector<int64_t> dropped;
  bool unbounded = false;  // keeps every entry (full cache)
};

struct Measurement {
  int64_t seq_length = 0;
  int64_t kv_cache_size = 0;
  int64_t kv_bytes = 0;        // keys and values held at the end of a repetition
  int64_t peak_rss_bytes = 0;  // the process's peak resident memory so far
  std::vector<double> latencies_ms;    // every timed step of every repetition
  std::vector<double> repetition_avg;  // mean latency of each repetition
  std::vector<double> prefill_ms;      // the prefill of each repetition
};

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Repetitions that disagree by more than this (coefficient of variation of their mean
// latencies) get a warning: the machine was busy or its clock changed.
constexpr double kMaxRepetitionCv = 0.10;

double mean_of(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0 : sum / static_cast<double>(values.size());
}

double stdev_of(const std::vector<double>& values) {
  const double mean = mean_of(values);
  double var = 0;
  for (double v : values) var += (v - mean) * (v - mean);
  return values.empty() ? 0 : std::sqrt(var / static_cast<double>(values.size()));
}

int64_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::string megabytes(int64_t bytes) { return format_fixed(static_cast<double>(bytes) / 1e6, 1); }

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// One prefill + decode run at length `seq_length`; returns the step latencies in ms and the
// prefill's time (its S - 1 tokens in one batch, the policy applied once) in *prefill_ms.
std::vector<double> run_once(kvc_session* session, const kvc_model_info& info,
                             int64_t seq_length, int64_t n_decode, uint64_t seed,
                             kvc_logits prefill_logits, int64_t* kv_cache_size,
                             double* prefill_ms) {
  // The same ids for every mode and repetition at a given length, so modes see equal input.
  std::mt19937_64 rng(seed * 1000003u + static_cast<uint64_t>(seq_length));
  const uint64_t span = static_cast<uint64_t>(info.vocab_size - 200);
  std::vector<int32_t> ids(static_cast<size_t>(seq_length));
  for (auto& id : ids) id = static_cast<int32_t>(100 + rng() % span);
  std::vector<float> logits(static_cast<size_t>(info.vocab_size));

  check(kvc_session_reset(session), "resetting the session");
  *prefill_ms = 0;
  if (seq_length > 1) {
    thread_local std::vector<float> prefill_out;
    const size_t rows = prefill_logits == KVC_LOGITS_ALL ? ids.size() - 1 : 1;
    if (prefill_logits != KVC_LOGITS_NONE)
      prefill_out.resize(rows * static_cast<size_t>(info.vocab_size));
    const auto t0 = std::chrono::steady_clock::now();
    check(kvc_session_step(session, ids.data(), ids.size() - 1, prefill_logits,
                           prefill_out.data(), prefill_out.size()),
          "prefill of " + std::to_string(seq_length - 1) + " tokens");
    *prefill_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  check(kvc_session_step(session, &ids.back(), 1, KVC_LOGITS_LAST, logits.data(), logits.size()),
        "step " + std::to_string(seq_length));
  int32_t next = argmax(logits);
  std::vector<double> latencies;
  latencies.reserve(static_cast<size_t>(n_decode));
  for (int64_t j = 0; j < n_decode; ++j) {
    const auto t0 = std::chrono::steady_clock::now();
    const kvc_status st =
        kvc_session_step(session, &next, 1, KVC_LOGITS_LAST, logits.data(), logits.size());
    // Build the message only on failure: it would otherwise be timed with the step.
    if (st != KVC_OK)
      check(st, "decode step " + std::to_string(j) + " after " + std::to_string(seq_length) +
                    " tokens");
    next = argmax(logits);
    const auto t1 = std::chrono::steady_clock::now();
    latencies.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::vector<int64_t> counts(static_cast<size_t>(info.n_layers) * info.n_heads);
  check(kvc_session_cache_counts(session, counts.data(), counts.size()), "cache counts");
  *kv_cache_size = counts.empty() ? 0 : counts[0];  // layer 0 (all heads hold equal counts)
  return latencies;
}

double repetition_cv(const Measurement& m) {
  const double mean = mean_of(m.repetition_avg);
  return mean > 0 ? stdev_of(m.repetition_avg) / mean : 0.0;
}

json result_json(const Measurement& m, int64_t n_decode) {
  const auto& l = m.latencies_ms;
  const double mean = mean_of(l), stdev = stdev_of(l);
  const double sum = mean * static_cast<double>(l.size());
  const double reps = static_cast<double>(std::max<size_t>(1, m.repetition_avg.size()));
  return {{"seq_length", m.seq_length},
          {"kv_cache_size", m.kv_cache_size},
          {"avg_decode_latency_ms", mean},
          {"std_decode_latency_ms", stdev},
          {"total_decode_latency_ms", sum / reps},
          {"tokens_per_sec", mean > 0 ? 1000.0 / mean : 0.0},
          {"median_decode_latency_ms", median(m.repetition_avg)},
          {"prefill_tokens", m.seq_length - 1},
          {"prefill_ms", median(m.prefill_ms)},
          {"prefill_tokens_per_sec",
           median(m.prefill_ms) > 0 ? 1000.0 * static_cast<double>(m.seq_length - 1) /
                                          median(m.prefill_ms)
                                    : 0.0},
          {"repetition_prefill_ms", m.prefill_ms},
          {"repetition_avg_latency_ms", m.repetition_avg},
          {"repetition_cv", repetition_cv(m)},
          {"kv_cache_bytes", m.kv_bytes},
          {"peak_rss_bytes", m.peak_rss_bytes},
          {"num_decode_tokens", n_decode}};
}

int run_bench(Options& options) {
  install_interrupt_handlers();
  std::vector<std::string> warnings;
  const std::string mode = options.get_string("policy", "name");
  PolicyCatalog catalog(options.get_opt_string("policy", "search_path").value_or(""));
  check_mode_tables(options, catalog);
  std::vector<Plan> plans;
  if (mode == "all") {
    for (const auto& name : catalog.all_modes()) {
      plans.push_back({make_run(options, catalog, name, false, &warnings), {}, {}, {}, false});
    }
  } else {
    plans.push_back({make_run(options, catalog, mode, true, &warnings), {}, {}, {}, false});
  }
  for (const auto& w : warnings) warn(kProgram, w);

  const auto seq_lengths = options.get_int_list("bench", "seq_lengths");
  const bool explicit_lengths = options.is_set("bench", "seq_lengths");
  const int64_t n_decode = options.get_int("bench", "num_decode_tokens");
  const int64_t warmup = options.get_int("bench", "warmup");
  const int64_t repetitions = options.get_int("bench", "repetitions");
  const uint64_t seed = static_cast<uint64_t>(options.get_int("bench", "seed"));
  const std::string logits_name = options.get_string("bench", "prefill_logits");
  const kvc_logits prefill_logits = logits_name == "all"    ? KVC_LOGITS_ALL
                                    : logits_name == "last" ? KVC_LOGITS_LAST
                                                            : KVC_LOGITS_NONE;
  const uint64_t weight_seed = options.is_set("model", "seed")
                                   ? static_cast<uint64_t>(options.get_int("model", "seed"))
                                   : seed;
  const OutputDir outputs_folder(options.get_string("bench", "output_dir"),
                                  options.origin("bench", "output_dir"));
  const fs::path& output_dir = outputs_folder.path();
  LoadedModel model = load_model(options, weight_seed);
  const auto& info = model.info;
  json model_json = model.describe();
  const json files_of_model = model_provenance(kProgram, model.path, weight_seed);
  for (const auto& [key, value] : files_of_model.items()) model_json[key] = value;
  json engine = engine_versions();
  engine["backend"] = backend_name(info.backend);
  engine["dtype"] = dtype_name(info.weight_dtype);
  engine["threads"] = info.n_threads;
  if (info.vocab_size <= 200) {
    throw RunError("model '" + model.path + "' has a vocabulary of " +
                   std::to_string(info.vocab_size) + " ids; the benchmark draws ids in "
                   "[100, vocab - 100) and needs more than 200");
  }
  const int64_t max_pos = info.max_position_embeddings;
  const int64_t longest = *std::max_element(seq_lengths.begin(), seq_lengths.end());

  // ---- every length checked against every policy before anything is timed ------------------
  std::vector<std::string> errors;
  for (auto& plan : plans) {
    SessionPtr probe = make_session(model.model.get(), plan.spec, longest + n_decode + 1);
    const kvc_cache_stats stats = cache_stats(probe.get());
    plan.unbounded = stats.capacity < 0;
    plan.report = policy_report(probe.get());
    std::fprintf(stderr, "%s: %s: %s\n", kProgram, plan.spec.mode.c_str(),
                 variant_summary(plan.report, plan.spec).c_str());
    for (int64_t s : seq_lengths) {
      if (plan.unbounded && s > max_pos) {
        if (explicit_lengths) {
          errors.push_back(std::to_string(s));
        } else {
          plan.dropped.push_back(s);
        }
        continue;
      }
      plan.seq_lengths.push_back(s);
    }
    if (!errors.empty()) {
      std::string list;
      for (const auto& e : errors) list += (list.empty() ? "" : ", ") + e;
      throw UsageError("--seq_lengths: " + list + " beyond the context of model '" + model.path +
                       "' (max_position_embeddings " + std::to_string(max_pos) +
                       ") for policy '" + plan.spec.mode +
                       "', which keeps every entry; use lengths <= " + std::to_string(max_pos) +
                       ", or an evicting policy (with --positions shift its rotary positions "
                       "never exceed its capacity, so any length works)");
    }
    if (!plan.dropped.empty()) {
      std::string list;
      for (auto s : plan.dropped) list += (list.empty() ? "" : ", ") + std::to_string(s);
      warn(kProgram, "policy '" + plan.spec.mode + "' keeps every entry: skipping the default "
                     "lengths " + list + " beyond the model's context (" +
                     std::to_string(max_pos) + ")");
    }
    const int64_t end = (plan.seq_lengths.empty() ? 0 : plan.seq_lengths.back()) + n_decode;
    if (plan.unbounded && end > max_pos) {
      warn(kProgram, "policy '" + plan.spec.mode + "': the last decode steps run past the "
                     "model's context (" + std::to_string(max_pos) + " positions), as in the "
                     "seed's measurement");
    } else if (!plan.unbounded && plan.spec.positions == KVC_POSITIONS_ORIGINAL &&
               end > max_pos) {
      warn(kProgram, "policy '" + plan.spec.mode + "' with --positions original uses positions "
                     "up to " + std::to_string(end) + ", past the model's context (" +
                     std::to_string(max_pos) + "): extrapolation");
    }
  }

  // ---- measurements --------------------------------------------------------------------------
  std::vector<Series> series;
  std::map<int64_t, std::map<std::string, double>> by_length;  // for the --mode all table
  int64_t total_runs = 0, runs_done = 0;
  for (const auto& plan : plans)
    total_runs += static_cast<int64_t>(plan.seq_lengths.size()) * (warmup + repetitions);
  Progress progress("kvc-bench", total_runs, "runs");
  bool stopped = false;
  for (const auto& plan : plans) {
    if (plan.seq_lengths.empty() || stopped) continue;
    const int64_t plan_longest =
        *std::max_element(plan.seq_lengths.begin(), plan.seq_lengths.end());
    SessionPtr session =
        make_session(model.model.get(), plan.spec, plan_longest + n_decode + 1);
    json results = json::array();
    Series line;
    line.name = plan.spec.mode;
    for (int64_t s : plan.seq_lengths) {
      Measurement m;
      m.seq_length = s;
      for (int64_t r = 0; r < warmup + repetitions && !stopped; ++r) {
        int64_t kv = 0;
        double prefill = 0;
        auto latencies =
            run_once(session.get(), info, s, n_decode, seed, prefill_logits, &kv, &prefill);
        stopped = interrupted();
        progress.update(++runs_done, plan.spec.mode + " seq_length " + std::to_string(s) +
                                         (r < warmup ? " (warmup)" : ""));
        if (r < warmup) continue;
        m.prefill_ms.push_back(prefill);
        m.repetition_avg.push_back(mean_of(latencies));
        m.latencies_ms.insert(m.latencies_ms.end(), latencies.begin(), latencies.end());
        m.kv_cache_size = kv;
        m.kv_bytes = cache_stats(session.get()).kv_bytes;
        m.peak_rss_bytes = peak_rss_bytes();
      }
      if (m.repetition_avg.empty()) break;  // interrupted before a timed repetition
      json r = result_json(m, n_decode);
      const double cv = repetition_cv(m);
      std::fprintf(stderr,
                   "%s: seq_length %lld: %.3f ms/token (median %.3f), prefill %.1f ms, kv cache "
                   "%lld entries (%s MB), peak RSS %s MB\n",
                   plan.spec.mode.c_str(), static_cast<long long>(s),
                   r["avg_decode_latency_ms"].get<double>(),
                   r["median_decode_latency_ms"].get<double>(), r["prefill_ms"].get<double>(),
                   static_cast<long long>(m.kv_cache_size), megabytes(m.kv_bytes).c_str(),
                   megabytes(m.peak_rss_bytes).c_str());
      if (cv > kMaxRepetitionCv)
        warn(kProgram, plan.spec.mode + " at seq_length " + std::to_string(s) +
                           ": the repetitions disagree (coefficient of variation " +
                           format_fixed(100 * cv, 1) + "% > " +
                           format_fixed(100 * kMaxRepetitionCv, 0) +
                           "%); the machine may be busy: rerun with more --repetitions");
      line.x.push_back(static_cast<double>(s));
      line.y.push_back(r["median_decode_latency_ms"].get<double>());
      line.error.push_back(stdev_of(m.repetition_avg));
      by_length[s][plan.spec.mode] = r["median_decode_latency_ms"].get<double>();
      results.push_back(std::move(r));
      if (stopped) break;
    }
    json config = plan.spec.params_json();
    config["mode"] = plan.spec.mode;
    config["seq_lengths"] = plan.seq_lengths;
    config["num_decode_tokens"] = n_decode;
    config["warmup"] = warmup;
    config["repetitions"] = repetitions;
    config["seed"] = seed;
    config["positions"] = plan.spec.positions_name();
    config["prefill_logits"] = logits_name;
    config["model_name_or_path"] = model.path;
    json out = {{"mode", plan.spec.mode},
                {"interrupted", stopped},
                {"config", config},
                {"policy", plan.spec.policy},
                {"variant", variant_summary(plan.report, plan.spec)},
                {"policy_report", plan.report},
                {"engine", engine},
                {"model", model_json},
                {"results", results},
                {"skipped_seq_lengths", plan.dropped},
                {"settings", settings_json(options)}};
    const fs::path path = output_dir / ("speed_results_" + plan.spec.mode + ".json");
    write_json(path, out);
    std::printf("%s -> %s\n", plan.spec.mode.c_str(), path.string().c_str());
    series.push_back(std::move(line));
  }

  progress.finish(runs_done, stopped ? "interrupted" : "done");
  const std::string tag = mode == "all" ? "all" : plans.front().spec.mode;
  const fs::path stem = output_dir / ("speed_benchmark_" + tag);
  std::string warning;
  const std::string model_name = fs::path(model.path).filename().string();
  Figure figure;
  figure.title = "Decode latency against sequence length";
  figure.caption = (model_name.empty() ? model.path : model_name) + ", " +
                   dtype_name(info.weight_dtype) + ", " + backend_name(info.backend) + ", " +
                   std::to_string(info.n_threads) + " threads; median over " +
                   std::to_string(repetitions) + " repetitions of the mean of " +
                   std::to_string(n_decode) + " steps, bars: their standard deviation";
  Panel panel;
  panel.xlabel = "sequence length (tokens)";
  panel.ylabel = "decode latency (ms / token)";
  panel.log_x = true;
  panel.y_from_zero = true;
  panel.series = series;
  figure.panels.push_back(std::move(panel));
  if (draw_figure(stem, figure, &warning))
    std::printf("plot -> %s.svg, %s.png\n", stem.string().c_str(), stem.string().c_str());
  else
    warn(kProgram, warning);
  if (mode == "all") {
    std::vector<std::string> header = {"Seq Length"};
    for (const auto& line : series) header.push_back(line.name);
    std::vector<std::vector<std::string>> rows;
    for (const auto& [s, cells] : by_length) {
      std::vector<std::string> row = {std::to_string(s)};
      for (const auto& line : series) {
        auto it = cells.find(line.name);
        row.push_back(it == cells.end() ? "-" : format_fixed(it->second, 3) + " ms");
      }
      rows.push_back(row);
    }
    const std::string md = markdown_table(header, rows);
    const fs::path path = output_dir / "speed_results_table.md";
    write_file_atomic(path, md);
    std::printf("\n%s\n(table written to %s)\n", md.c_str(), path.string().c_str());
  }
  if (stopped) {
    warn(kProgram, "interrupted: the results so far are written, marked \"interrupted\"");
    return interrupted_exit_status();
  }
  return 0;
}

}  // namespace
}  // namespace kvc::hosts

int main(int argc, char** argv) {
  return kvc::hosts::program_main(
      kvc::hosts::Program::Bench,
      "[--mode MODE] [--seq_lengths N [N ...]] [options]\n\nDecode latency against sequence "
      "length under a KV-cache policy (docs/hosts.md).",
      argc, argv, kvc::hosts::run_bench);
}
