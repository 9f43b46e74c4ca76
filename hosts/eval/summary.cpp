#include "summary.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "files.h"
#include "report.h"

namespace fs = std::filesystem;

namespace kvc::hosts {

namespace {

double tokens_per_sec(const RunOutcome& r) {
  return r.wall_s > 0 ? static_cast<double>(r.total.scored) / r.wall_s : 0.0;
}

Figure sweep_figure(const std::vector<const RunOutcome*>& points,
                    const std::optional<double>& dense_ppl, bool compared,
                    const std::string& caption) {
  std::map<std::string, Series> ppl, kl;
  std::vector<std::string> order;
  double lo = 0, hi = 0;
  for (const RunOutcome* p : points) {
    const std::string& mode = p->display;
    const auto capacity = static_cast<double>(p->capacity);
    if (!ppl.count(mode)) order.push_back(mode);
    Series& s = ppl[mode];
    s.name = mode;
    s.x.push_back(capacity);
    s.y.push_back(p->total.ppl());
    Series& k = kl[mode];
    k.name = mode;
    k.x.push_back(capacity);
    k.y.push_back(p->total.mean_kl());
    lo = lo == 0 ? capacity : std::min(lo, capacity);
    hi = std::max(hi, capacity);
  }
  Figure f;
  f.title = "Perplexity against cache budget";
  f.caption = caption + "; PPL over all scored tokens" + (compared ? ", mean KL per token" : "");
  Panel a;
  a.xlabel = "cache budget (entries per layer and head)";
  a.ylabel = "perplexity";
  a.log_x = true;
  for (const auto& m : order) a.series.push_back(ppl[m]);
  if (dense_ppl) {
    Series d;
    d.name = "full cache";
    d.style = Series::Style::Lines;
    d.x = {lo, hi};
    d.y = {*dense_ppl, *dense_ppl};
    a.series.push_back(d);
  }
  f.panels.push_back(a);
  if (compared) {
    Panel b = a;
    b.ylabel = "KL(full cache || policy), nats per token";
    b.y_from_zero = true;
    b.series.clear();
    for (const auto& m : order) b.series.push_back(kl[m]);
    f.panels.push_back(b);
  }
  return f;
}

}  // namespace

void draw(const std::string& program, const fs::path& stem, const Figure& figure) {
  std::string warning;
  if (draw_figure(stem, figure, &warning))
    std::printf("figure: %s.svg, .png\n", stem.string().c_str());
  else
    warn(program, warning);
}

void print_run_line(const RunOutcome& r) {
  const Tally& t = r.total;
  std::string line = r.display + (r.budget ? " @" + std::to_string(*r.budget) : "") + ": ppl " +
                     format_fixed(t.ppl(), 4) + " over " + std::to_string(t.scored) +
                     " tokens (" + std::to_string(r.n_files) + " files), cache max " +
                     std::to_string(t.cache_max) + " mean " + format_fixed(t.cache_mean(), 1);
  if (t.compared > 0)
    line += ", KL " + format_fixed(t.mean_kl(), 4) + " top-1 " +
            format_fixed(100 * t.top1_agreement(), 1) + "%";
  line += ", " + format_fixed(tokens_per_sec(r), 1) + " tok/s" +
          (r.interrupted ? " (interrupted)" : "") + " -> " + r.path.string();
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

void write_summary(const std::string& program, const std::vector<RunOutcome>& runs,
                   const SummarySettings& s, bool interrupted) {
  std::vector<std::vector<std::string>> table, sweep_table;
  std::vector<const RunOutcome*> sweep;
  std::vector<std::string> notes;
  std::optional<double> dense_ppl;
  for (const RunOutcome& r : runs) {
    const Tally& t = r.total;
    std::vector<std::string> row = {r.display, format_fixed(t.ppl(), 3),
                                    std::to_string(t.cache_max), format_fixed(t.cache_mean(), 1),
                                    format_fixed(tokens_per_sec(r), 1)};
    if (s.compare)
      for (const std::string& cell : {t.compared ? format_fixed(t.mean_kl(), 4) : "",
                                      t.compared ? format_fixed(100 * t.top1_agreement(), 1)
                                                 : ""})
        row.push_back(cell);
    if (r.budget) {
      sweep.push_back(&r);
      row.insert(row.begin() + 1, {std::to_string(*r.budget), std::to_string(r.capacity)});
      sweep_table.push_back(row);
    } else {
      table.push_back(row);
    }
    if (r.protocol == Protocol::Dense) dense_ppl = t.ppl();
    if (t.extrapolated > 0)
      notes.push_back(r.display + ": " + std::to_string(t.extrapolated) + " of " +
                      std::to_string(t.scored) + " scored tokens were predicted at positions >= "
                      "max_position_embeddings (" +
                      std::to_string(s.max_position_embeddings) + "): extrapolation");
  }
  if (s.figures) {
    Panel p;
    p.xlabel = "position in the text (tokens)";
    p.ylabel = "NLL (nats)";
    int64_t window = 0;
    for (const RunOutcome& r : runs)
      if (r.in_loss_figure && !r.loss.empty())
        p.series.push_back(r.loss.series(r.display, s.loss_window, &window));
    if (!p.series.empty()) {
      Figure f;
      f.title = "Loss against position";
      f.caption = s.caption + "; mean NLL over the files at each position, running mean over " +
                  std::to_string(window) + " positions";
      f.panels.push_back(std::move(p));
      draw(program, s.output_dir / "loss_vs_position", f);
    }
  }
  std::vector<std::string> header = {"Method", "PPL", "Cache max", "Cache mean", "Tokens/s"};
  if (s.compare) header.insert(header.end(), {"KL", "Top-1 %"});
  auto with_notes = [&](std::string md) {
    for (const auto& note : notes) md += "\n- " + note;
    if (interrupted) md += "\n- interrupted: the runs after the last row did not run";
    if (!notes.empty() || interrupted) md += "\n";
    return md;
  };
  if (!sweep.empty()) {
    std::vector<std::string> sweep_header = header;
    sweep_header.insert(sweep_header.begin() + 1, {"Budget", "Capacity"});
    const std::string md = with_notes(markdown_table(sweep_header, sweep_table));
    const fs::path path = s.output_dir / "ppl_budget_sweep.md";
    write_file_atomic(path, md);
    std::printf("\n%s\n(table written to %s)\n", md.c_str(), path.string().c_str());
    if (s.figures)
      draw(program, s.output_dir / "ppl_budget_sweep",
           sweep_figure(sweep, dense_ppl, s.compare, s.caption));
  }
  if (s.all && !table.empty()) {
    const std::string md = with_notes(markdown_table(header, table));
    const fs::path path = s.output_dir / "ppl_results_table.md";
    write_file_atomic(path, md);
    std::printf("\n%s\n(table written to %s)\n", md.c_str(), path.string().c_str());
  } else if (sweep.empty()) {
    for (const auto& note : notes) std::printf("note: %s\n", note.c_str());
  }
}

}  // namespace kvc::hosts
