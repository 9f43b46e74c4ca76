// Figures drawn by gnuplot (Debian's gnuplot-nox), written as SVG and PNG. Plotting is
// optional: without gnuplot the caller gets a warning and its JSON results are still written.
//
// Style, for print: the Okabe-Ito palette (readable with colour-blindness), and each series
// also differs by dash pattern and point shape, so a greyscale copy stays legible. Every figure
// carries a caption (model, dtype, threads, backend, the statistic shown).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace kvc::hosts {

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::vector<double> error;  // y +- error bars when not empty (same length as y)
  enum class Style { Lines, LinesPoints, Points } style = Style::LinesPoints;
};

// A grid of values drawn as coloured cells with their values written in them (a heat map):
// values[y * x_labels.size() + x], NaN for an empty cell, on the colour scale [low, high].
struct HeatMap {
  std::vector<std::string> x_labels, y_labels;
  std::vector<double> values;
  double low = 0, high = 1;
  std::string scale_label;  // the colour bar's title
};

struct Panel {
  std::string title;  // empty: none (one-panel figures use Figure::title)
  std::string xlabel, ylabel;
  bool log_x = false;        // base 2
  bool y_from_zero = false;  // y axis starts at 0
  std::vector<Series> series;
  std::optional<HeatMap> heat_map;  // drawn instead of the series
};

struct Figure {
  std::string title;
  std::string caption;       // one line under the title
  std::vector<Panel> panels; // drawn side by side (at most 4 per row)
};

// Draws `figure` into `<stem>.svg` and `<stem>.png` (each written atomically). Returns false
// and sets `warning` when gnuplot is missing or fails; nothing is left half-written. The
// gnuplot executable is $KVC_GNUPLOT if set, else `gnuplot` on PATH.
bool draw_figure(const std::filesystem::path& stem, const Figure& figure, std::string* warning);

}  // namespace kvc::hosts
