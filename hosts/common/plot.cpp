#include "plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "files.h"

extern char** environ;

namespace fs = std::filesystem;

namespace kvc::hosts {
namespace {

// gnuplot single-quoted string: only the quote itself needs escaping (doubled).
std::string quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
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

// Runs `program script` with output to `log`; returns the exit status (-1 if not started).
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

}  // namespace

bool plot_latency(const fs::path& png, const std::string& title,
                  const std::vector<PlotSeries>& series, std::string* warning) {
  std::string gnuplot = find_gnuplot();
  if (gnuplot.empty() || ::access(gnuplot.c_str(), X_OK) != 0) {
    *warning = "gnuplot not found" + (gnuplot.empty() ? std::string(" on PATH") :
                                      " at '" + gnuplot + "'") +
               "; the plot " + png.string() + " was not drawn (install gnuplot-nox)";
    return false;
  }
  static std::atomic<int> counter{0};
  std::error_code ec;
  fs::path work = fs::temp_directory_path(ec) /
                  ("kvc-plot-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::create_directories(work, ec);
  if (ec) {
    *warning = "cannot create a temporary folder for gnuplot: " + ec.message();
    return false;
  }
  if (png.has_parent_path()) fs::create_directories(png.parent_path(), ec);
  fs::path temp_png = png;
  temp_png += ".tmp." + std::to_string(::getpid());

  bool ok = false;
  std::string log_text;
  // pngcairo draws antialiased lines; the libgd png terminal is the fallback.
  for (const char* terminal : {"pngcairo size 900,600", "png size 900,600"}) {
    std::ostringstream script;
    script << "set terminal " << terminal << "\n"
           << "set termoption noenhanced\n"
           << "set output " << quote(temp_png.string()) << "\n"
           << "set title " << quote(title) << "\n"
           << "set xlabel 'sequence length (tokens)'\n"
           << "set ylabel 'decode latency (ms / token)'\n"
           << "set logscale x 2\nset grid\nset key top left\nset yrange [0:*]\n";
    std::vector<std::string> plots;
    for (size_t i = 0; i < series.size(); ++i) {
      fs::path data = work / ("series" + std::to_string(i) + ".dat");
      std::ofstream out(data);
      for (const auto& [x, y] : series[i].points) out << x << " " << y << "\n";
      plots.push_back(quote(data.string()) + " using 1:2 with linespoints lw 2 pt 7 title " +
                      quote(series[i].name));
    }
    script << "plot ";
    for (size_t i = 0; i < plots.size(); ++i) script << (i ? ", \\\n     " : "") << plots[i];
    script << "\nset output\n";
    fs::path script_path = work / "plot.gp";
    std::ofstream(script_path) << script.str();
    int rc = run(gnuplot, script_path, work / "gnuplot.log");
    std::error_code size_ec;
    if (rc == 0 && fs::file_size(temp_png, size_ec) > 0 && !size_ec) {
      ok = true;
      break;
    }
    std::ifstream log(work / "gnuplot.log");
    std::ostringstream text;
    text << log.rdbuf();
    log_text = text.str();
  }
  if (ok) {
    fs::rename(temp_png, png, ec);
    ok = !ec;
    if (ec) log_text = ec.message();
  }
  fs::remove(temp_png, ec);
  fs::remove_all(work, ec);
  if (!ok) {
    while (!log_text.empty() && (log_text.back() == '\n' || log_text.back() == ' ')) {
      log_text.pop_back();
    }
    *warning = "gnuplot failed to draw " + png.string() + ": " + log_text;
  }
  return ok;
}

}  // namespace kvc::hosts
