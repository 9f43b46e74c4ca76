// The C ABI's opaque kvc_tokenizer: owns one kvc::Tokenizer. A model owns one the same way
// and hands out a const pointer to it (kvc_model_tokenizer).
#pragma once

#include <memory>

#include "tokenizer/tokenizer.h"

struct kvc_tokenizer {
  std::unique_ptr<kvc::Tokenizer> impl;
};
