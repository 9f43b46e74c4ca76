// Latency plot drawn by gnuplot (Debian's gnuplot-nox). Plotting is optional: without gnuplot
// the caller gets a warning and the JSON results are still written.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace kvc::hosts {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (sequence length, latency ms)
};

// Draws one line per series into `png` (written atomically). Returns false and sets `warning`
// if gnuplot is missing or fails. The gnuplot executable is $KVC_GNUPLOT if set, else
// `gnuplot` on PATH.
bool plot_latency(const std::filesystem::path& png, const std::string& title,
                  const std::vector<PlotSeries>& series, std::string* warning);

}  // namespace kvc::hosts
