#include "figure.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

extern char** environ;

namespace fs = std::filesystem;

namespace kvc::hosts {
namespace {

// Okabe & Ito (2008), "Color Universal Design": distinguishable with any colour vision (its
// yellow, too faint for lines on white, replaced by grey).
const char* const kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                "#E69F00", "#56B4E9", "#000000", "#999999"};
constexpr int kNumColours = 8;

// gnuplot double-quoted string (so "\n" can break a title line).
std::string quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string find_gnuplot() {
  if (const char* env = std::getenv("KVC_GNUPLOT")) return env;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    fs::path candidate = fs::path(dir) / "gnuplot";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

// Runs `program script` with its output to `log`; the exit status, or -1 if not started.
int run(const std::string& program, const fs::path& script, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string script_text = script.string();
  char* argv[] = {const_cast<char*>(program.c_str()), script_text.data(), nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A heat map: cells at integer coordinates labelled by the axis labels, each with its value
// printed (so the figure reads in greyscale too); the viridis scale (perceptually uniform).
std::string heat_map_commands(const HeatMap& h, const fs::path& data) {
  std::ofstream out(data);
  const size_t nx = h.x_labels.size(), ny = h.y_labels.size();
  for (size_t y = 0; y < ny; ++y)
    for (size_t x = 0; x < nx; ++x) {
      const double v = y * nx + x < h.values.size() ? h.values[y * nx + x] : NAN;
      out << x << " " << y << " " << (std::isfinite(v) ? std::to_string(v) : "NaN") << "\n";
    }
  std::ostringstream s;
  auto tics = [](const std::vector<std::string>& labels) {
    std::string t = "(";
    for (size_t i = 0; i < labels.size(); ++i)
      t += (i ? ", " : "") + quote(labels[i]) + " " + std::to_string(i);
    return t + ")";
  };
  s << "unset logscale x\nset key off\nunset grid\n"
    << "set xrange [-0.5:" << nx - 0.5 << "]\nset yrange [-0.5:" << ny - 0.5 << "]\n"
    << "set xtics " << tics(h.x_labels) << "\nset ytics " << tics(h.y_labels) << "\n"
    << "set cbrange [" << h.low << ":" << h.high << "]\nset cblabel " << quote(h.scale_label)
    << "\nset palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21908d', 0.75 '#5dc963', "
       "1 '#fde725')\n"
    // Dark text on the light end of the scale, light text on the dark end.
    << "plot " << quote(data.string()) << " using 1:2:3 with image, \\\n     "
    << quote(data.string()) << " using 1:2:($3 >= " << h.low + 0.6 * (h.high - h.low)
    << " ? sprintf('%.2f', $3) : '') with labels font ',9' tc rgb 'black', \\\n     "
    << quote(data.string()) << " using 1:2:($3 < " << h.low + 0.6 * (h.high - h.low)
    << " ? sprintf('%.2f', $3) : '') with labels font ',9' tc rgb 'white'\n"
    << "set xtics autofreq\nset ytics autofreq\nset key on\nset grid\n"
    << "set xrange [*:*]\nset yrange [*:*]\n";
  return s.str();
}

// The plotting commands (everything after `set terminal` and `set output`).
std::string figure_script(const Figure& figure, const fs::path& work) {
  std::ostringstream s;
  s << "set termoption noenhanced\n";
  const size_t n = std::max<size_t>(1, figure.panels.size());
  const size_t columns = std::min<size_t>(n, 4), rows = (n + columns - 1) / columns;
  s << "set multiplot layout " << rows << "," << columns << " title "
    << quote(figure.title + (figure.caption.empty() ? "" : "\n" + figure.caption))
    << " font ',11'\n";
  s << "set grid lc rgb '#d0d0d0'\nset key box opaque\nset border lw 1\n";
  for (size_t p = 0; p < figure.panels.size(); ++p) {
    const Panel& panel = figure.panels[p];
    // Many lines: the key goes beside the plot, where it hides no data.
    s << (panel.series.size() > 5 ? "set key outside right top\n" : "set key inside top left\n");
    s << "set title " << quote(panel.title) << "\n"
      << "set xlabel " << quote(panel.xlabel) << "\nset ylabel " << quote(panel.ylabel) << "\n"
      << (panel.log_x ? "set logscale x 2\n" : "unset logscale x\n")
      << (panel.y_from_zero ? "set yrange [0:*]\n" : "set yrange [*:*]\n");
    if (panel.heat_map) {
      s << heat_map_commands(*panel.heat_map, work / ("p" + std::to_string(p) + "heat.dat"));
      continue;
    }
    std::vector<std::string> plots;
    for (size_t i = 0; i < panel.series.size(); ++i) {
      const Series& series = panel.series[i];
      const fs::path data =
          work / ("p" + std::to_string(p) + "s" + std::to_string(i) + ".dat");
      std::ofstream out(data);
      out.precision(10);
      const bool errors = series.error.size() == series.y.size() && !series.error.empty();
      for (size_t k = 0; k < series.x.size() && k < series.y.size(); ++k) {
        if (!std::isfinite(series.x[k]) || !std::isfinite(series.y[k])) continue;
        out << series.x[k] << " " << series.y[k];
        if (errors) out << " " << series.error[k];
        out << "\n";
      }
      std::string with;
      switch (series.style) {
        case Series::Style::Lines: with = errors ? "yerrorlines pt -1" : "lines"; break;
        case Series::Style::Points: with = errors ? "yerrorbars" : "points pt 7 ps 0.3"; break;
        default: with = errors ? "yerrorlines" : "linespoints";
      }
      // Series i and i + 8 share a colour but never a dash pattern or point shape.
      const std::string style = " lc rgb '" + std::string(kColours[i % kNumColours]) +
                                "' lw 2 dt " + std::to_string(1 + (i + i / kNumColours) % 5) +
                                (series.style == Series::Style::Points
                                     ? ""
                                     : " pt " + std::to_string(4 + (i % 10)) + " ps 0.8");
      plots.push_back(quote(data.string()) + (errors ? " using 1:2:3" : " using 1:2") +
                      " with " + with + style + " title " + quote(series.name));
    }
    if (plots.empty()) {
      s << "set key off\nplot [0:1] NaN notitle\nset key on\n";
      continue;
    }
    s << "plot ";
    for (size_t i = 0; i < plots.size(); ++i) s << (i ? ", \\\n     " : "") << plots[i];
    s << "\n";
  }
  s << "unset multiplot\nset output\n";
  return s.str();
}

// Draws with one terminal into `out` (through a temporary file); false with the log on failure.
bool draw_with(const std::string& gnuplot, const std::string& terminal, const std::string& body,
               const fs::path& out, const fs::path& work, std::string* log_text) {
  fs::path temp = out;
  temp += ".tmp." + std::to_string(::getpid());
  const fs::path script = work / "figure.gp";
  std::ofstream(script) << "set terminal " << terminal << "\nset output " << quote(temp.string())
                        << "\n"
                        << body;
  const int rc = run(gnuplot, script, work / "gnuplot.log");
  std::error_code ec;
  if (rc == 0 && fs::file_size(temp, ec) > 0 && !ec) {
    fs::rename(temp, out, ec);
    if (!ec) return true;
    *log_text = ec.message();
  } else {
    std::ifstream log(work / "gnuplot.log");
    std::ostringstream text;
    text << log.rdbuf();
    *log_text = text.str();
  }
  fs::remove(temp, ec);
  return false;
}

}  // namespace

bool draw_figure(const fs::path& stem, const Figure& figure, std::string* warning) {
  fs::path svg = stem, png = stem;
  svg += ".svg";
  png += ".png";
  const std::string gnuplot = find_gnuplot();
  if (gnuplot.empty() || ::access(gnuplot.c_str(), X_OK) != 0) {
    *warning = "gnuplot not found" +
               (gnuplot.empty() ? std::string(" on PATH") : " at '" + gnuplot + "'") +
               "; the figure " + svg.string() + " was not drawn (install gnuplot-nox)";
    return false;
  }
  static std::atomic<int> counter{0};
  std::error_code ec;
  const fs::path work = fs::temp_directory_path(ec) / ("kvc-figure-" + std::to_string(::getpid()) +
                                                       "-" + std::to_string(counter++));
  fs::create_directories(work, ec);
  if (ec) {
    *warning = "cannot create a temporary folder for gnuplot: " + ec.message();
    return false;
  }
  if (stem.has_parent_path()) fs::create_directories(stem.parent_path(), ec);
  const std::string body = figure_script(figure, work);
  const size_t columns = std::min<size_t>(std::max<size_t>(1, figure.panels.size()), 4);
  const size_t rows = (std::max<size_t>(1, figure.panels.size()) + columns - 1) / columns;
  const std::string size =
      std::to_string(columns > 1 ? 520 * columns : 900) + "," + std::to_string(560 * rows);
  std::string log_text;
  bool ok = draw_with(gnuplot, "svg size " + size + " dynamic font 'Helvetica,13' background "
                                                    "'white'",
                      body, svg, work, &log_text);
  // pngcairo draws antialiased lines; the libgd png terminal is the fallback.
  if (ok)
    ok = draw_with(gnuplot, "pngcairo size " + size + " font 'Helvetica,11'", body, png, work,
                   &log_text) ||
         draw_with(gnuplot, "png size " + size, body, png, work, &log_text);
  fs::remove_all(work, ec);
  if (!ok) {
    while (!log_text.empty() && (log_text.back() == '\n' || log_text.back() == ' '))
      log_text.pop_back();
    *warning = "gnuplot failed to draw " + stem.string() + ".svg/.png: " + log_text;
  }
  return ok;
}

}  // namespace kvc::hosts
