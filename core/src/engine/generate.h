// kvc_generate: decoding with a sampler, stop sequences and a per-token callback, over the
// public operations of a kvc::Session (a prefill step, then one step per token).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"
#include "kvc/kvc.h"

namespace kvc {

// The text side of a generation: token bytes in, final text out. Text is held back while it
// could still be the start of a stop sequence, or is an incomplete UTF-8 character; it is
// released as soon as it cannot. Stop sequences are matched on the raw bytes, so one spanning
// any number of tokens is found; the text before it is the last text released. Released text
// has invalid UTF-8 replaced by U+FFFD exactly as kvc_detokenize replaces it for the whole text.
class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops);

  struct Out {
    std::string text;  // final text released by this push
    int32_t stop = -1; // index of the stop sequence found (earliest start; first listed on ties)
  };
  // Appends one token's bytes. After a stop sequence was found, nothing more is released.
  Out push(std::string_view bytes);
  // Everything still held (at the end of a generation not ended by a stop sequence).
  std::string flush();
  bool stopped() const { return stopped_; }

  // The start of a trailing UTF-8 sequence that is incomplete but could still become valid
  // (bytes.size() when there is none).
  static size_t incomplete_tail(std::string_view bytes);

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // bytes not released yet
  size_t longest_ = 0;
  bool stopped_ = false;
};

struct GenerateConfig {
  int32_t max_tokens = 128;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_tokens;
  kvc_token_callback on_token = nullptr;
  void* user_data = nullptr;
};

// See kvc_generate in kvc.h. `tokens` (may be null) receives the generated ids and must hold
// max_tokens of them.
kvc_generate_result generate(Session& session, Sampler& sampler, const int32_t* prompt,
                             size_t n_prompt, const GenerateConfig& config, int32_t* tokens,
                             size_t tokens_capacity);

}  // namespace kvc
