// kvc::Model: a loaded model, immutable after load, shared by every session (and thread) that
// uses it. The C handle kvc_model (api/handles.h) owns one.
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"
#include "kvc/kvc.h"
#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace kvc {

struct Model {
  std::string path;  // folder, or "synthetic:<name>"
  ModelConfig config;
  std::unique_ptr<ModelWeights> weights;
  std::shared_ptr<const Tokenizer> tokenizer;  // null when the folder has no tokenizer.json
  // The CUDA backend's copy of the weights; null when the model runs on the CPU.
  std::unique_ptr<DeviceModel> device;
  kvc_backend backend = KVC_BACKEND_CPU;
  int n_threads = 1;
};

// Loads a Hugging Face folder or a "synthetic:" model (see kvc_model_load).
std::unique_ptr<Model> load_model(const std::string& path, const kvc_model_options& options);

}  // namespace kvc
