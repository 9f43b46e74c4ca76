#include "engine/model.h"

#include <filesystem>
#include <thread>

#include "common/error.h"

namespace kvc {
namespace {

constexpr const char* kSyntheticPrefix = "synthetic:";

DType storage_dtype(kvc_dtype requested) {
  switch (requested) {
    case KVC_DTYPE_AUTO:
    case KVC_DTYPE_F32: return DType::F32;
    case KVC_DTYPE_BF16: return DType::BF16;
    case KVC_DTYPE_F16: return DType::F16;
  }
  fail(KVC_ERR_INVALID_ARGUMENT,
       "kvc_model_options.weight_dtype: unknown value " + std::to_string(requested) +
           " (expected KVC_DTYPE_AUTO, _F32, _BF16 or _F16)");
}

}  // namespace

// Far above any machine's core count, far below the thread pool's chunk limit (65535).
constexpr int kMaxThreads = 4096;

std::unique_ptr<Model> load_model(const std::string& path, const kvc_model_options& options) {
  if (options.n_threads < 0 || options.n_threads > kMaxThreads)
    fail(KVC_ERR_INVALID_ARGUMENT,
         "kvc_model_options.n_threads: " + std::to_string(options.n_threads) +
             " is outside [0, " + std::to_string(kMaxThreads) +
             "] (expected 0 = one per core, or a thread count)");
  switch (options.backend) {
    case KVC_BACKEND_AUTO:
    case KVC_BACKEND_CPU:
    case KVC_BACKEND_CUDA:
      break;
    default:
      fail(KVC_ERR_INVALID_ARGUMENT, "kvc_model_options.backend: unknown value " +
                                         std::to_string(options.backend));
  }
  // CUDA computes in fp16/bf16 only: AUTO with an explicit float32 request stays on the CPU.
  DeviceProvider* provider = nullptr;
  const bool wants_f32 = options.weight_dtype == KVC_DTYPE_F32;
  if (options.backend == KVC_BACKEND_CUDA) {
    if (wants_f32)
      fail(KVC_ERR_UNSUPPORTED, "kvc_model_options.weight_dtype: the CUDA backend stores "
                                "weights in float16 or bfloat16, not float32");
    provider = &cuda_provider();  // throws KVC_ERR_BACKEND saying why
    provider->probe(options.device);
  } else if (options.backend == KVC_BACKEND_AUTO && !wants_f32) {
    try {
      provider = &cuda_provider();
      provider->probe(options.device);
    } catch (const Error&) {
      provider = nullptr;  // no library or no device: the CPU, silently
    }
  }
  auto model = std::make_unique<Model>();
  model->path = path;
  model->backend = provider ? KVC_BACKEND_CUDA : KVC_BACKEND_CPU;
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  model->n_threads = options.n_threads > 0 ? options.n_threads : static_cast<int>(hw);
  const DType dtype = provider && options.weight_dtype == KVC_DTYPE_AUTO
                          ? DType::F16
                          : storage_dtype(options.weight_dtype);
  // Uploads the weights once they are loaded (the host copy stays: embeddings and tests).
  const auto attach_device = [&](Model& m) {
    if (provider) m.device = provider->load(*m.weights, options.device, dtype);
  };

  if (path.rfind(kSyntheticPrefix, 0) == 0) {
    model->config = synthetic_config(path.substr(std::char_traits<char>::length(kSyntheticPrefix)));
    model->weights = synthetic_weights(model->config, dtype, options.seed, model->n_threads);
    attach_device(*model);
    return model;
  }

  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec))
    fail(KVC_ERR_IO, "model folder '" + path + "' does not exist");
  if (!fs::is_directory(path, ec))
    fail(KVC_ERR_IO, "model path '" + path +
                         "' is not a folder (expected a Hugging Face model folder with "
                         "config.json and model.safetensors, or synthetic:<name>)");
  model->config = load_config_file((fs::path(path) / "config.json").string());
  model->weights = load_weights(path, model->config, dtype, model->n_threads);
  const fs::path tok = fs::path(path) / "tokenizer.json";
  if (fs::exists(tok, ec)) {
    model->tokenizer = Tokenizer::load_file(tok.string());
  }
  attach_device(*model);
  return model;
}

}  // namespace kvc
