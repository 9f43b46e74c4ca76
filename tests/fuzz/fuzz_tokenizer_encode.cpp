// Encoding arbitrary bytes with the embedded model's tokenizer (models/kjv-mini, byte-level BPE
// with an NFC normalizer). Properties: every id is in the vocabulary, and decoding gives back
// the input as the tokenizer sees it: invalid UTF-8 replaced by U+FFFD, then NFC between the
// added tokens.
#include <utf8proc.h>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

namespace {

const kvc::Tokenizer& tokenizer() {
  static const auto tok =
      kvc::Tokenizer::load_file(std::string(KVC_SOURCE_DIR) + "/models/kjv-mini/tokenizer.json");
  return *tok;
}

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                              static_cast<utf8proc_ssize_t>(s.size()), &out,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) kvc::fuzz::broken("utf8proc rejected text after replacement");
  std::string r(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

// The tokenizer splits off added tokens before normalizing, so NFC applies to the pieces
// between them (a combining mark right after "<|endoftext|>" must not compose with its '>').
std::string expected_text(const std::string& valid) {
  static const std::string kAdded[] = {"<|endoftext|>", "<|padding|>"};
  std::string out;
  size_t from = 0;
  while (true) {
    size_t best = std::string::npos, len = 0;
    for (const auto& a : kAdded) {
      const size_t at = valid.find(a, from);
      if (at < best) best = at, len = a.size();
    }
    out += nfc(valid.substr(from, best == std::string::npos ? std::string::npos : best - from));
    if (best == std::string::npos) return out;
    out += valid.substr(best, len);
    from = best + len;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kvc::Tokenizer& tok = tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text);
  } catch (const kvc::Error& e) {
    kvc::fuzz::broken(std::string("encode threw: ") + e.what());
  }
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) kvc::fuzz::broken("id out of range");
  if (size > 0 && ids.empty()) kvc::fuzz::broken("non-empty text encoded to nothing");
  const std::string back = tok.decode(ids);
  const std::string expected = expected_text(kvc::utf8::replace_invalid(text));
  if (back != expected) kvc::fuzz::broken("decode(encode(text)) differs from NFC(text)");
  if (!kvc::utf8::is_valid(back)) kvc::fuzz::broken("decode produced invalid UTF-8");
  return 0;
}
