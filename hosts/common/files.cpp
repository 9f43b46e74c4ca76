#include "files.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <atomic>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <system_error>

#include "options.h"

namespace fs = std::filesystem;

namespace kvc::hosts {

namespace {

void create_parent(const fs::path& path) {
  std::error_code ec;
  if (!path.has_parent_path()) return;
  fs::create_directories(path.parent_path(), ec);
  if (ec)
    throw RunError("cannot create folder '" + path.parent_path().string() + "': " + ec.message());
}

fs::path temp_name(const fs::path& path) {
  static std::atomic<int> counter{0};
  fs::path temp = path;
  temp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  return temp;
}

}  // namespace

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  create_parent(path_);
  temp_ = temp_name(path_);
  file_ = std::fopen(temp_.c_str(), "wb");
  if (!file_)
    throw RunError("cannot write '" + temp_.string() + "': " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (!file_) return;
  std::fclose(file_);
  std::error_code ec;
  fs::remove(temp_, ec);
}

void AtomicFile::write(const std::string& text) {
  if (file_ && std::fwrite(text.data(), 1, text.size(), file_) != text.size()) failed_ = true;
}

void AtomicFile::commit() {
  if (!file_) return;
  const bool flushed = std::fflush(file_) == 0 && !failed_;
  const int close_status = std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  if (!flushed || close_status != 0) {
    fs::remove(temp_, ec);
    throw RunError("cannot write '" + path_.string() + "' (disk full?)");
  }
  fs::rename(temp_, path_, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(temp_, ignored);
    throw RunError("cannot rename '" + temp_.string() + "' to '" + path_.string() +
                   "': " + ec.message());
  }
}

void write_file_atomic(const fs::path& path, const std::string& content) {
  AtomicFile file(path);
  file.write(content);
  file.commit();
}

OutputDir::OutputDir(fs::path dir, const std::string& flag) : dir_(std::move(dir)) {
  std::error_code ec;
  for (fs::path p = dir_; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    created_.insert(created_.begin(), p);
    if (p == p.parent_path()) break;
  }
  fs::create_directories(dir_, ec);
  if (ec)
    throw RunError(flag + ": cannot create the output folder '" + dir_.string() +
                   "': " + ec.message());
  if (!fs::is_directory(dir_, ec))
    throw RunError(flag + ": '" + dir_.string() + "' is not a folder");
  const fs::path probe = temp_name(dir_ / ".kvc-write-check");
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f)
    throw RunError(flag + ": cannot write in the output folder '" + dir_.string() +
                   "': " + std::strerror(errno));
  std::fclose(f);
  fs::remove(probe, ec);
}

OutputDir::~OutputDir() {
  std::error_code ec;
  for (auto it = created_.rbegin(); it != created_.rend(); ++it)
    if (fs::is_empty(*it, ec) && !ec) fs::remove(*it, ec);
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
