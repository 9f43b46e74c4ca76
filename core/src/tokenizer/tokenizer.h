// Hugging Face tokenizer.json (byte-level BPE) in C++, producing the same ids as the
// `tokenizers` library. Supported: a BPE model (vocab + merges), the normalizers NFC, NFD,
// NFKC, NFKD or a Sequence of them, the ByteLevel pre-tokenizer (GPT-2 split pattern), added
// tokens (special and not, normalized or not) and the ByteLevel decoder. Anything else is
// rejected at load time with an error naming the JSON field. See docs/tokenizer.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvc {

class Tokenizer {
 public:
  // Both throw kvc::Error: KVC_ERR_IO (file), KVC_ERR_FORMAT (malformed JSON or a missing or
  // wrong-typed field) or KVC_ERR_UNSUPPORTED (a valid feature kvc does not implement). The
  // message names `origin` (the file) and the field.
  static std::unique_ptr<Tokenizer> load_file(const std::string& path);
  static std::unique_ptr<Tokenizer> load_json(std::string_view json, const std::string& origin);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Encodes UTF-8 text without adding special tokens. Invalid UTF-8 is first replaced with
  // U+FFFD exactly like Python's bytes.decode("utf-8", errors="replace"). Thread-safe.
  std::vector<int32_t> encode(std::string_view utf8) const;
  // Decodes ids (special tokens included) to UTF-8; byte sequences that are not valid UTF-8
  // become U+FFFD as above. Throws KVC_ERR_OUT_OF_RANGE for an id that names no token.
  std::string decode(const int32_t* ids, size_t n) const;
  std::string decode(const std::vector<int32_t>& ids) const {
    return decode(ids.data(), ids.size());
  }

  int32_t vocab_size() const;                         // highest id + 1 (incl. added tokens)
  int32_t token_to_id(std::string_view token) const;  // -1 if absent
  // The token string as it appears in tokenizer.json. Throws KVC_ERR_OUT_OF_RANGE.
  const std::string& id_to_token(int32_t id) const;
  // The raw bytes an id decodes to (before any U+FFFD replacement; a token may hold part of
  // a UTF-8 character), or nullptr for an id that names no token. For streaming decoders.
  const std::string* id_bytes(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// UTF-8 helpers (exposed for tests).
namespace utf8 {
// True if `s` is well-formed UTF-8 (no surrogates, no overlongs, nothing above U+10FFFF).
bool is_valid(std::string_view s);
// Replaces each maximal ill-formed subpart with U+FFFD (Unicode's "substitution of maximal
// subparts", which is what Python's errors="replace" does). Valid input is returned as is.
std::string replace_invalid(std::string_view s);
}  // namespace utf8

}  // namespace kvc
