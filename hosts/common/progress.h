// Progress display on stderr: a single self-updating line on a terminal, plain periodic lines
// otherwise (logs, CI), so redirected output stays readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvc::hosts {

class Progress {
 public:
  // `total` units expected (`unit`: "tok" for tokens); `label` prefixes every line (e.g. the
  // mode).
  Progress(std::string label, int64_t total, std::string unit = "tok");
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` units so far; `detail` is appended (e.g. "ppl 12.3 file 2/9"). Cheap when called
  // often: the display is refreshed at most ~10 times a second on a terminal and every few
  // seconds otherwise.
  void update(int64_t done, const std::string& detail);
  // Whether update() would redraw now (lets callers skip building `detail`).
  bool due() const;
  // Final line (always printed).
  void finish(int64_t done, const std::string& detail);

  // Forced plain mode (tests) or forced terminal mode; default: isatty(stderr).
  static void set_terminal_override(int mode);  // -1 auto, 0 plain, 1 terminal

 private:
  void draw(const std::string& detail, bool final_line);

  std::string label_;
  int64_t total_;
  std::string unit_;
  int64_t done_ = 0;
  bool terminal_;
  bool open_line_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace kvc::hosts
