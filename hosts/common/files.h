// File helpers of the host programs: atomic writes, text-file discovery, path defaults.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace kvc::hosts {

// Writes `content` to `path` through a temporary file in the same folder and a rename, so a
// reader never sees a partial file and a failed run leaves no file behind. Creates the folder.
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

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
