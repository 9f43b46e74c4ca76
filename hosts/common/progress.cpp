#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace kvc::hosts {
namespace {
int g_terminal_override = -1;
}

void Progress::set_terminal_override(int mode) { g_terminal_override = mode; }

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      unit_(std::move(unit)),
      terminal_(g_terminal_override >= 0 ? g_terminal_override == 1 : isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (open_line_) std::fputc('\n', stderr);
}

bool Progress::due() const {
  auto since = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_draw_);
  return since.count() >= (terminal_ ? 0.1 : 5.0);
}

void Progress::update(int64_t done, const std::string& detail) {
  done_ = done;
  if (!due()) return;
  last_draw_ = std::chrono::steady_clock::now();
  draw(detail, false);
}

void Progress::finish(int64_t done, const std::string& detail) {
  done_ = done;
  draw(detail, true);
}

void Progress::draw(const std::string& detail, bool final_line) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
                       .count();
  double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  double fraction = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
  char stats[160];
  std::snprintf(stats, sizeof stats, "%lld/%lld %s %.0f %s/s %.0fs",
                static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(),
                rate, unit_.c_str(), elapsed);
  if (terminal_) {
    constexpr int kWidth = 24;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(filled, '=');
    if (filled < kWidth) bar += '>' + std::string(kWidth - filled - 1, ' ');
    // \r + clear-to-end keeps one line; the final state stays on screen.
    std::fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %s %s", label_.c_str(), bar.c_str(),
                 fraction * 100, stats, detail.c_str());
    open_line_ = !final_line;
    if (final_line) std::fputc('\n', stderr);
  } else {
    std::fprintf(stderr, "%s: %3.0f%% %s %s\n", label_.c_str(), fraction * 100, stats,
                 detail.c_str());
  }
  std::fflush(stderr);
}

}  // namespace kvc::hosts
