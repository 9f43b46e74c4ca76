// kvc-eval's input: the evaluation text files, read, checked and tokenized once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kvc/kvc.h"

namespace kvc::hosts {

struct Text {
  std::filesystem::path path;
  std::vector<int32_t> ids;
};

struct Skipped {
  std::filesystem::path path;
  std::string reason;
};

struct Texts {
  std::vector<Text> texts;
  std::vector<Skipped> skipped;
};

// The first `max_files` usable .txt files of `data_dir` (sorted by name), tokenized alone (no
// special tokens). Empty, non-UTF-8 or one-token files are skipped with a warning on stderr
// (`program` prefixes it). Throws RunError when no file is usable, or when a token id is
// outside the model's vocabulary (the tokenizer does not belong to the model).
Texts load_texts(const std::string& program, const std::filesystem::path& data_dir,
                 int64_t max_files, const kvc_tokenizer* tokenizer, int32_t vocab_size);

}  // namespace kvc::hosts
