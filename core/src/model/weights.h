// GPT-NeoX weights in the engine's storage layout: matrices in the requested dtype (nn.Linear
// layout, [out, in]), layer norms and biases always float32. One 64-byte aligned arena owns all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/tensor.h"

namespace kvc {

struct LayerWeights {
  const float* ln1_w = nullptr;  // input_layernorm            [hidden]
  const float* ln1_b = nullptr;
  const float* ln2_w = nullptr;  // post_attention_layernorm   [hidden]
  const float* ln2_b = nullptr;
  Matrix qkv;                    // [3 * hidden, hidden], per head: q, k, v rows of head_dim
  const float* qkv_b = nullptr;  // [3 * hidden]
  Matrix attn_out;               // [hidden, hidden]
  const float* attn_out_b = nullptr;
  Matrix fc_in;  // dense_h_to_4h [intermediate, hidden]
  const float* fc_in_b = nullptr;
  Matrix fc_out;  // dense_4h_to_h [hidden, intermediate]
  const float* fc_out_b = nullptr;
};

// Owner of the weight memory: one anonymous mapping, page aligned.
class WeightArena {
 public:
  explicit WeightArena(size_t bytes);
  ~WeightArena();
  WeightArena(const WeightArena&) = delete;
  WeightArena& operator=(const WeightArena&) = delete;
  uint8_t* data() const { return base_; }
  size_t size() const { return size_; }

 private:
  void* map_ = nullptr;
  size_t map_size_ = 0;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
};

struct ModelWeights {
  ModelConfig config;
  DType dtype = DType::F32;  // storage type of every Matrix
  Matrix embed_in;           // [vocab, hidden]; row t is token t's embedding
  std::vector<LayerWeights> layers;
  const float* final_ln_w = nullptr;
  const float* final_ln_b = nullptr;
  Matrix embed_out;    // [vocab, hidden]
  std::string source;  // folder, or "synthetic:<name> seed <n>"

  size_t bytes() const { return stored_bytes; }  // bytes of all stored weights (no padding)

  std::unique_ptr<WeightArena> arena;
  size_t stored_bytes = 0;
};

// Loads <folder>/model.safetensors, or the shards listed in <folder>/model.safetensors.index.json,
// checking every tensor against `config` and converting to `dtype` while reading the mappings.
// `threads` <= 0 uses every hardware thread.
// Errors (kvc::Error): KVC_ERR_IO (missing folder, file or shard), KVC_ERR_FORMAT (malformed
// file or index, shape differing from config, unexpected weight), KVC_ERR_UNSUPPORTED (dtype),
// KVC_ERR_NOT_FOUND (a required weight is absent).
std::unique_ptr<ModelWeights> load_weights(const std::string& folder, const ModelConfig& config,
                                           DType dtype, int threads = 0);

// Deterministic random weights for `seed` (Pythia-like scale: matrices ~N(0, 0.02), biases
// ~N(0, 0.01), layer norms weight 1 / bias 0), generated directly in `dtype`, in parallel. The
// values depend only on (seed, tensor, index), never on the thread count.
std::unique_ptr<ModelWeights> synthetic_weights(const ModelConfig& config, DType dtype,
                                                uint64_t seed, int threads = 0);

// Parses "float32"/"fp32"/"f32", "bfloat16"/"bf16", "float16"/"fp16"/"f16"/"half".
// KVC_ERR_INVALID_ARGUMENT otherwise.
DType parse_dtype(const std::string& name);

}  // namespace kvc
