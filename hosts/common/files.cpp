#include "files.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <system_error>

#include "options.h"

namespace fs = std::filesystem;

namespace kvc::hosts {

void write_file_atomic(const fs::path& path, const std::string& content) {
  std::error_code ec;
  if (path.has_parent_path()) {
    fs::create_directories(path.parent_path(), ec);
    if (ec) {
      throw RunError("cannot create folder '" + path.parent_path().string() +
                     "': " + ec.message());
    }
  }
  static std::atomic<int> counter{0};
  fs::path temp = path;
  temp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw RunError("cannot write '" + temp.string() + "'");
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) {
      out.close();
      fs::remove(temp, ec);
      throw RunError("cannot write '" + temp.string() + "' (disk full?)");
    }
  }
  fs::rename(temp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    throw RunError("cannot rename '" + temp.string() + "' to '" + path.string() +
                   "': " + ec.message());
  }
}

std::optional<size_t> first_invalid_utf8(const std::string& text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      cp = c & 0x07;
    } else {
      return i;  // continuation byte, overlong 2-byte lead (C0/C1) or F5..FF
    }
    if (i + length > n) return i;
    for (size_t k = 1; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((length == 3 && cp < 0x800) || (length == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return i;
    }
    i += length;
  }
  return std::nullopt;
}

std::vector<fs::path> list_text_files(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    throw RunError("data folder '" + dir.string() + "' does not exist");
  }
  if (!fs::is_directory(dir, ec)) {
    throw RunError("data folder '" + dir.string() + "' is not a folder");
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".txt" && entry.is_regular_file()) {
      files.push_back(entry.path());
    }
  }
  if (ec) throw RunError("cannot list data folder '" + dir.string() + "': " + ec.message());
  if (files.empty()) {
    throw RunError("data folder '" + dir.string() + "' contains no .txt files");
  }
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return files;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RunError("cannot open '" + path.string() + "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw RunError("cannot read '" + path.string() + "'");
  return buffer.str();
}

fs::path executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return exe.parent_path();
}

std::vector<fs::path> resource_roots() {
  std::vector<fs::path> roots{fs::path(".")};
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) {
    roots.push_back(fs::path(xdg) / "kvc");
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    roots.push_back(fs::path(home) / ".local" / "share" / "kvc");
  }
  const fs::path exe = executable_dir();
  if (!exe.empty()) roots.push_back(exe.parent_path() / "share" / "kvc");  // <prefix>/bin/..
#if defined(KVC_HOSTS_SOURCE_DIR) && defined(KVC_HOSTS_BINARY_DIR)
  // Only from the build folder: an installed program must not depend on the source tree.
  const fs::path build = fs::path(KVC_HOSTS_BINARY_DIR).lexically_normal();
  const fs::path rel = exe.lexically_normal().lexically_relative(build);
  if (!exe.empty() && !rel.empty() && *rel.begin() != "..") {
    roots.emplace_back(KVC_HOSTS_SOURCE_DIR);
  }
#endif
  return roots;
}

fs::path resolve_resource(const std::string& relative, const std::string& what,
                          const std::string& hint) {
  std::error_code ec;
  const fs::path given(relative);
  if (given.is_absolute()) return given;
  std::string looked;
  for (const auto& root : resource_roots()) {
    const fs::path candidate = root == "." ? given : root / given;
    if (fs::exists(candidate, ec)) return candidate;
    looked += "\n  " + (root == "." ? candidate.string() + " (working directory)"
                                     : candidate.string());
  }
  throw RunError(what + " '" + relative + "' not found; looked at:" + looked +
                 (hint.empty() ? "" : "\n" + hint));
}

}  // namespace kvc::hosts
