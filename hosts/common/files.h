// File helpers of the host programs: atomic writes, text-file discovery, path defaults.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace kvc::hosts {

// Writes `content` to `path` through a temporary file in the same folder and a rename, so a
// reader never sees a partial file and a failed run leaves no file behind. Creates the folder.
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

// A file written in pieces that appears under its name only when complete: the text goes to a
// temporary file beside it, and commit() renames it into place. Destroyed without commit() (an
// error), the temporary file is removed, so no half-written file is left behind.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);  // creates the folder; throws RunError
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const std::string& text);
  void commit();  // throws RunError (disk full, rename failed)
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_, temp_;
  std::FILE* file_ = nullptr;
  bool failed_ = false;
};

// The folder results go to, created (with its parents) and checked for writing when the
// program starts, so a run that cannot save its results fails before its first token, not
// after hours. Throws RunError naming `flag`, the folder and the system's reason. The folders it
// created are removed again on destruction if they are still empty, so a run that fails before
// writing anything leaves nothing behind.
class OutputDir {
 public:
  OutputDir(std::filesystem::path dir, const std::string& flag);
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;
  const std::filesystem::path& path() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::vector<std::filesystem::path> created_;  // deepest last
};

// Offset of the first byte that is not valid UTF-8 (overlongs, surrogates and code points
// beyond U+10FFFF are invalid), or nullopt if the whole text is valid.
std::optional<size_t> first_invalid_utf8(const std::string& text);

// Every regular *.txt file directly in `dir`, sorted by file name. Throws RunError naming
// the folder if it does not exist, is not a folder, or holds no .txt file.
std::vector<std::filesystem::path> list_text_files(const std::filesystem::path& dir);

std::string read_file(const std::filesystem::path& path);

// Folder of the running executable (from /proc/self/exe); empty if unknown.
std::filesystem::path executable_dir();

// The folders a default resource such as "models/kjv-mini" is looked up in, in order: the
// working directory, the user's data folder ($XDG_DATA_HOME/kvc, else ~/.local/share/kvc),
// <prefix>/share/kvc of the running program (installed programs), and the source tree when
// the program runs from its build folder.
std::vector<std::filesystem::path> resource_roots();

// Resolves a default resource: the first root holding `relative`. An absolute path is returned
// as it is. When no root holds it, throws RunError naming `what`, every place looked at and
// `hint` (what to do about it, may be empty).
std::filesystem::path resolve_resource(const std::string& relative, const std::string& what,
                                       const std::string& hint = "");

}  // namespace kvc::hosts
