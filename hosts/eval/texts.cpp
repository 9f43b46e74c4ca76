#include "texts.h"

#include "files.h"
#include "options.h"
#include "report.h"
#include "runtime.h"

namespace fs = std::filesystem;

namespace kvc::hosts {


Texts load_texts(const std::string& program, const fs::path& data_dir, int64_t max_files,
                 const kvc_tokenizer* tokenizer, int32_t vocab_size) {
  Texts out;
  for (const auto& path : list_text_files(data_dir)) {
    if (static_cast<int64_t>(out.texts.size()) >= max_files) break;
    std::string content = read_file(path);
    std::string reason;
    if (content.empty()) {
      reason = "empty file";
    } else if (auto bad = first_invalid_utf8(content)) {
      reason = "not valid UTF-8 (byte " + std::to_string(*bad) + ")";
    }
    std::vector<int32_t> ids;
    if (reason.empty()) {
      ids = tokenize_text(tokenizer, content, "'" + path.string() + "'");
      if (ids.size() < 2) reason = "fewer than 2 tokens";
    }
    if (!reason.empty()) {
      warn(program, "skipping '" + path.string() + "': " + reason);
      out.skipped.push_back({path, reason});
      continue;
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size) {
        throw RunError("token id " + std::to_string(id) + " of '" + path.string() +
                       "' is outside the model's vocabulary (" + std::to_string(vocab_size) +
                       "): the tokenizer does not belong to this model");
      }
    }
    out.texts.push_back({path, std::move(ids)});
  }
  if (out.texts.empty()) {
    throw RunError("no usable text in '" + data_dir.string() + "': all " +
                   std::to_string(out.skipped.size()) + " .txt files were skipped");
  }
  return out;
}

}  // namespace kvc::hosts
