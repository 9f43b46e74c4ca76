// The C ABI's opaque handles: thin owners of the engine's objects, so that the engine's classes
// keep their own names (kvc::Model, kvc::Session) and the C types stay what callers hold.
#pragma once

#include <memory>

#include "engine/model.h"
#include "engine/session.h"
#include "tokenizer/tokenizer_handle.h"

struct kvc_model {
  std::unique_ptr<kvc::Model> model;
  kvc_tokenizer tokenizer;  // shares model->tokenizer; what kvc_model_tokenizer hands out
};

struct kvc_session {
  std::unique_ptr<kvc::Session> session;
};
