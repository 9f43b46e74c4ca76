// Times weight creation and loading (not a test; results go to docs, not assertions).
//   kvc_model_bench load <synthetic:pythia-1b | FOLDER> <float32|bfloat16|float16> [threads]
//   kvc_model_bench write <pythia-410m> <FOLDER> [float32|bfloat16|float16]
// `write` saves synthetic weights (seed 1) as a Hugging Face folder (config.json plus
// model.safetensors), so that loading a multi-GB checkpoint can be timed without a download.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/config.h"
#include "model/dtype_convert.h"
#include "model/weights.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_load(const std::string& what, const std::string& dtype_name, int threads) {
  const kvc::DType dtype = kvc::parse_dtype(dtype_name);
  const auto t0 = std::chrono::steady_clock::now();
  const bool synthetic = what.rfind("synthetic:", 0) == 0;
  const kvc::ModelConfig c = synthetic ? kvc::synthetic_config(what) : kvc::load_config_file(what);
  auto w = synthetic ? kvc::synthetic_weights(c, dtype, 1, threads)
                     : kvc::load_weights(what, c, dtype, threads);
  const double s = seconds_since(t0);
  std::printf("%s -> %s: %zu params, %.3f GB stored, %.3f s\n", what.c_str(),
              kvc::dtype_name(dtype), c.n_params(), w->bytes() / 1e9, s);
  return 0;
}

struct Out {
  std::string name;
  std::vector<int64_t> shape;
  const void* data;  // float32 or the model's dtype
  size_t numel;
  bool matrix;
};

int run_write(const std::string& name, const std::string& folder, const std::string& dtype_name) {
  namespace fs = std::filesystem;
  const kvc::DType file_dtype = kvc::parse_dtype(dtype_name);
  const kvc::ModelConfig c = kvc::synthetic_config(name);
  auto w = kvc::synthetic_weights(c, kvc::DType::F32, 1);
  const int64_t h = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  std::vector<Out> outs;
  auto mat = [&](std::string n, const kvc::Matrix& m) {
    outs.push_back({std::move(n), {m.rows, m.cols}, m.data, size_t(m.rows * m.cols), true});
  };
  auto vec = [&](std::string n, const float* p, int64_t len) {
    outs.push_back({std::move(n), {len}, p, size_t(len), false});
  };
  mat("gpt_neox.embed_in.weight", w->embed_in);
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& L = w->layers[l];
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    vec(p + "input_layernorm.weight", L.ln1_w, h);
    vec(p + "input_layernorm.bias", L.ln1_b, h);
    vec(p + "post_attention_layernorm.weight", L.ln2_w, h);
    vec(p + "post_attention_layernorm.bias", L.ln2_b, h);
    mat(p + "attention.query_key_value.weight", L.qkv);
    vec(p + "attention.query_key_value.bias", L.qkv_b, 3 * h);
    mat(p + "attention.dense.weight", L.attn_out);
    vec(p + "attention.dense.bias", L.attn_out_b, h);
    mat(p + "mlp.dense_h_to_4h.weight", L.fc_in);
    vec(p + "mlp.dense_h_to_4h.bias", L.fc_in_b, f);
    mat(p + "mlp.dense_4h_to_h.weight", L.fc_out);
    vec(p + "mlp.dense_4h_to_h.bias", L.fc_out_b, h);
  }
  vec("gpt_neox.final_layer_norm.weight", w->final_ln_w, h);
  vec("gpt_neox.final_layer_norm.bias", w->final_ln_b, h);
  mat("embed_out.weight", w->embed_out);
  (void)v;

  const char* st = file_dtype == kvc::DType::F32    ? "F32"
                   : file_dtype == kvc::DType::BF16 ? "BF16"
                                                    : "F16";
  const size_t es = kvc::dtype_size(file_dtype);
  nlohmann::ordered_json header = {{"__metadata__", {{"format", "pt"}}}};
  size_t offset = 0;
  for (const auto& o : outs) {
    header[o.name] = {
        {"dtype", st}, {"shape", o.shape}, {"data_offsets", {offset, offset + o.numel * es}}};
    offset += o.numel * es;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data area 8-byte aligned
  fs::create_directories(folder);
  std::ofstream out(fs::path(folder) / "model.safetensors", std::ios::binary);
  uint64_t n = text.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.write(len, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::vector<uint16_t> half;
  for (const auto& o : outs) {
    const auto* p = static_cast<const float*>(o.data);
    if (file_dtype == kvc::DType::F32) {
      out.write(static_cast<const char*>(o.data), static_cast<std::streamsize>(o.numel * 4));
      continue;
    }
    half.resize(o.numel);
    for (size_t i = 0; i < o.numel; ++i)
      half[i] =
          file_dtype == kvc::DType::BF16 ? kvc::cvt::f32_to_bf16(p[i]) : kvc::cvt::f32_to_f16(p[i]);
    out.write(reinterpret_cast<const char*>(half.data()),
              static_cast<std::streamsize>(o.numel * 2));
  }
  nlohmann::json cfg = {{"architectures", {"GPTNeoXForCausalLM"}},
                        {"model_type", "gpt_neox"},
                        {"hidden_act", "gelu"},
                        {"hidden_size", c.hidden_size},
                        {"intermediate_size", c.intermediate_size},
                        {"num_attention_heads", c.n_heads},
                        {"num_hidden_layers", c.n_layers},
                        {"vocab_size", c.vocab_size},
                        {"max_position_embeddings", c.max_position_embeddings},
                        {"rotary_pct", 0.25},
                        {"rotary_emb_base", 10000},
                        {"layer_norm_eps", 1e-5},
                        {"use_parallel_residual", true},
                        {"tie_word_embeddings", false},
                        {"torch_dtype", kvc::dtype_name(file_dtype)}};
  std::ofstream(fs::path(folder) / "config.json") << cfg.dump(2) << "\n";
  if (!out) {
    std::fprintf(stderr, "error: writing %s failed\n", folder.c_str());
    return 1;
  }
  std::printf("wrote %s (%s, %.3f GB of tensors)\n", folder.c_str(), st, offset / 1e9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "load" && argc >= 4)
      return run_load(argv[2], argv[3], argc > 4 ? std::atoi(argv[4]) : 0);
    if (mode == "write" && argc >= 4)
      return run_write(argv[2], argv[3], argc > 4 ? argv[4] : "float32");
  } catch (const kvc::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: %s load <synthetic:NAME | FOLDER> <float32|bfloat16|float16> [threads]\n"
               "       %s write <pythia-NAME> <FOLDER> [float32|bfloat16|float16]\n",
               argv[0], argv[0]);
  return 2;
}
