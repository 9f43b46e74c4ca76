// GPT-NeoX model configuration: parsed from a Hugging Face config.json, or one of the built-in
// Pythia shapes for synthetic models.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvc {

struct ModelConfig {
  int n_layers = 0;
  int n_heads = 0;
  int head_dim = 0;  // hidden_size / n_heads
  int hidden_size = 0;
  int intermediate_size = 0;
  int vocab_size = 0;  // padded embedding rows (e.g. 50304), may exceed the tokenizer's
  int max_position_embeddings = 0;
  int rotary_ndims = 0;  // int(head_dim * rotary_pct), even, rotated with rotate_half
  float rotary_base = 10000.0f;
  float layer_norm_eps = 1e-5f;
  bool use_parallel_residual = true;
  std::string torch_dtype;  // dtype the checkpoint was saved in ("float16", ...; "" if absent)
  std::string name;         // folder name, or "pythia-1b" etc. for synthetic models

  // Weight parameters (embeddings, matrices, biases, layer norms).
  size_t n_params() const;
};

// Parses and validates config.json text. `origin` names the file in error messages.
// Throws kvc::Error: KVC_ERR_FORMAT (not JSON, missing key, wrong type, inconsistent numbers),
// KVC_ERR_UNSUPPORTED (another architecture, activation, tied embeddings, rope scaling).
ModelConfig parse_config_json(std::string_view json, const std::string& origin);

// Reads `path` (a config.json file, or a model folder holding one). KVC_ERR_IO if it cannot be
// read; otherwise as parse_config_json.
ModelConfig load_config_file(const std::string& path);

// The exact shapes of the Pythia suite: "pythia-70m" ... "pythia-12b" (a "synthetic:" prefix is
// accepted). KVC_ERR_NOT_FOUND with the list of valid names otherwise.
ModelConfig synthetic_config(std::string_view name);
const std::vector<std::string>& synthetic_model_names();

}  // namespace kvc
