// What a result file records about its inputs, so that a number can be traced to exactly what
// produced it: content hashes of the model and data files, and the engine that ran.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvc::hosts {

// Lower-case hex SHA-256 of a file's bytes. Throws RunError naming the file if it cannot be
// read.
std::string sha256_file(const std::filesystem::path& path);
std::string sha256_text(const std::string& bytes);

struct FileRecord {
  std::string name;  // file name (no folder)
  std::string path;  // as opened
  uint64_t bytes = 0;
  std::string sha256;
  nlohmann::ordered_json json() const;
};
FileRecord record_file(const std::filesystem::path& path);

// The model's files: config.json (its hash is the "config hash"), tokenizer.json and the
// safetensors weights (and their index), each with size and SHA-256, and one content hash over
// the weight files' hashes. A synthetic: model records its name and weight seed instead.
// Hashing reads every byte once (about 1.5 GB/s with SHA extensions); a note is printed on
// stderr for models over 1 GB.
nlohmann::ordered_json model_provenance(const std::string& program, const std::string& path,
                                        uint64_t synthetic_seed);

// The library and programs that ran: versions of kvc, its C ABI and policy ABI.
nlohmann::ordered_json engine_versions();

}  // namespace kvc::hosts
