// kvc-eval's summary of its runs, the same for a run and for merged shards: the line per run,
// the comparison table (--mode all), the budget-sweep table, and the loss and sweep figures.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "outputs.h"
#include "scoring.h"

namespace kvc::hosts {

// One run as the summary needs it.
struct RunOutcome {
  std::string label, display;
  Protocol protocol = Protocol::Stream;
  std::optional<int64_t> budget;  // --budgets: the run of this budget
  int64_t capacity = -1;          // and the capacity it reached
  Tally total;
  size_t n_files = 0;
  double wall_s = 0;
  bool interrupted = false;
  bool in_loss_figure = false;
  LossByPosition loss;
  std::filesystem::path path;  // its result file
};

struct SummarySettings {
  std::filesystem::path output_dir;
  bool all = false;      // --mode all: the comparison table
  bool compare = false;  // --compare_to dense: KL and top-1 columns
  bool figures = true;
  int64_t loss_window = 0;
  int64_t max_position_embeddings = 0;
  std::string caption;   // model, dtype, backend, threads
};

// "h2o: ppl 101.7115 over 10000 tokens (2 files), cache max 384 ..." on stdout.
void print_run_line(const RunOutcome& run);

// Tables and figures of `runs` (in plan order), written to the output folder and printed.
// `interrupted`: the runs after the last one did not run (the tables say so).
void write_summary(const std::string& program, const std::vector<RunOutcome>& runs,
                   const SummarySettings& settings, bool interrupted);

// Draws a figure into `stem`.svg/.png; a note on stdout when drawn, a warning when not.
void draw(const std::string& program, const std::filesystem::path& stem, const Figure& figure);

}  // namespace kvc::hosts
