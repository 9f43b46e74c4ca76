// kvc_model: immutable after load, shared by every session (and thread) that uses it.
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"
#include "kvc/kvc.h"
#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/tokenizer_handle.h"

struct kvc_model {
  std::string path;  // folder, or "synthetic:<name>"
  kvc::ModelConfig config;
  std::unique_ptr<kvc::ModelWeights> weights;
  std::unique_ptr<kvc_tokenizer> tokenizer;  // null when the folder has no tokenizer.json
  // The CUDA backend's copy of the weights; null when the model runs on the CPU.
  std::unique_ptr<kvc::DeviceModel> device;
  kvc_backend backend = KVC_BACKEND_CPU;
  int n_threads = 1;
};

namespace kvc {

// Loads a Hugging Face folder or a "synthetic:" model (see kvc_model_load).
std::unique_ptr<kvc_model> load_model(const std::string& path, const kvc_model_options& options);

}  // namespace kvc
