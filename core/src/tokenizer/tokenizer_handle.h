// The C ABI's opaque kvc_tokenizer: shares one kvc::Tokenizer. A model shares its tokenizer
// the same way and hands out a const pointer to its handle (kvc_model_tokenizer).
#pragma once

#include <memory>

#include "tokenizer/tokenizer.h"

struct kvc_tokenizer {
  std::shared_ptr<const kvc::Tokenizer> impl;
};
