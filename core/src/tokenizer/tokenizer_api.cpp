// C ABI of the standalone tokenizer (declared in kvc/kvc.h).
#include <cstring>

#include "api/guard.h"
#include "kvc/kvc.h"
#include "tokenizer/tokenizer_handle.h"

namespace {

const kvc::Tokenizer& tokenizer_of(const kvc_tokenizer* handle, const char* function) {
  kvc::require_arg(handle, function, "tokenizer");
  if (!handle->impl)
    throw kvc::Error(KVC_ERR_INVALID_ARGUMENT,
                     std::string(function) + ": the tokenizer handle is empty");
  return *handle->impl;
}

}  // namespace

extern "C" {

KVC_API kvc_status kvc_tokenizer_load(const char* path, kvc_tokenizer** out) {
  return kvc::guarded([&] {
    kvc::require_arg(out, "kvc_tokenizer_load", "out");
    *out = nullptr;
    kvc::require_arg(path, "kvc_tokenizer_load", "path");
    auto handle = std::make_unique<kvc_tokenizer>();
    handle->impl = kvc::Tokenizer::load_file(path);
    *out = handle.release();
  });
}

KVC_API void kvc_tokenizer_free(kvc_tokenizer* tokenizer) { delete tokenizer; }

KVC_API kvc_status kvc_tokenize(const kvc_tokenizer* tokenizer, const char* text,
                                size_t text_len, int32_t* ids, size_t capacity,
                                size_t* n_ids) {
  return kvc::guarded([&] {
    const kvc::Tokenizer& tok = tokenizer_of(tokenizer, "kvc_tokenize");
    kvc::require_arg(n_ids, "kvc_tokenize", "n_ids");
    *n_ids = 0;
    if (text_len > 0) kvc::require_arg(text, "kvc_tokenize", "text");
    if (capacity > 0) kvc::require_arg(ids, "kvc_tokenize", "ids");
    const std::vector<int32_t> result =
        tok.encode(text_len ? std::string_view(text, text_len) : std::string_view());
    *n_ids = result.size();
    if (result.size() > capacity)
      throw kvc::Error(KVC_ERR_BUFFER_TOO_SMALL,
                       "kvc_tokenize: the text has " + std::to_string(result.size()) +
                           " tokens but the buffer holds " + std::to_string(capacity));
    if (!result.empty()) std::memcpy(ids, result.data(), result.size() * sizeof(int32_t));
  });
}

KVC_API kvc_status kvc_detokenize(const kvc_tokenizer* tokenizer, const int32_t* ids,
                                  size_t n_ids, char* text, size_t capacity,
                                  size_t* text_len) {
  return kvc::guarded([&] {
    const kvc::Tokenizer& tok = tokenizer_of(tokenizer, "kvc_detokenize");
    kvc::require_arg(text_len, "kvc_detokenize", "text_len");
    *text_len = 0;
    if (n_ids > 0) kvc::require_arg(ids, "kvc_detokenize", "ids");
    if (capacity > 0) kvc::require_arg(text, "kvc_detokenize", "text");
    const std::string result = tok.decode(ids, n_ids);
    *text_len = result.size();
    if (result.size() > capacity)
      throw kvc::Error(KVC_ERR_BUFFER_TOO_SMALL,
                       "kvc_detokenize: the text has " + std::to_string(result.size()) +
                           " bytes but the buffer holds " + std::to_string(capacity));
    if (!result.empty()) std::memcpy(text, result.data(), result.size());
    if (result.size() < capacity) text[result.size()] = '\0';
  });
}

KVC_API int32_t kvc_tokenizer_vocab_size(const kvc_tokenizer* tokenizer) {
  if (!tokenizer || !tokenizer->impl) return 0;
  return tokenizer->impl->vocab_size();
}

KVC_API int32_t kvc_tokenizer_token_to_id(const kvc_tokenizer* tokenizer, const char* token) {
  if (!tokenizer || !tokenizer->impl || !token) return -1;
  return tokenizer->impl->token_to_id(token);
}

}  // extern "C"
