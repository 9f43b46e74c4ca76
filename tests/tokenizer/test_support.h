// Shared helpers of the tokenizer tests and benchmark: locating data files and producing the
// KJV text with Debian's `bible` program.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace kvc::test {

// KVC_SHARED_DATA_DIR (environment) overrides the compiled-in ../shared/data of the source tree.
inline std::filesystem::path shared_data_dir() {
  if (const char* env = std::getenv("KVC_SHARED_DATA_DIR"); env && *env) return env;
#ifdef KVC_SHARED_DATA_DIR
  return KVC_SHARED_DATA_DIR;
#else
  return "../shared/data";
#endif
}

inline std::filesystem::path source_dir() {
#ifdef KVC_SOURCE_DIR
  return KVC_SOURCE_DIR;
#else
  return ".";
#endif
}

inline std::filesystem::path neox_tokenizer_path() {
  return shared_data_dir() / "gpt-neox-20b-tokenizer.json";
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The whole KJV as `bible Gen1:1-Rev22:21` prints it (lines wrapped at 80 columns), or
// nothing if the program is missing or fails.
inline std::optional<std::string> kjv_text() {
  const char* command = "COLUMNS=80 bible Gen1:1-Rev22:21 2>/dev/null";
  FILE* pipe = popen(command, "r");
  if (!pipe) return std::nullopt;
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) text.append(buffer, n);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || text.empty())
    return std::nullopt;
  return text;
}

}  // namespace kvc::test
