// Helpers for the model-loading tests: a scratch folder per test and a minimal safetensors
// writer, so that bad inputs are made on the fly instead of being committed.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/config.h"

namespace kvc::test {

namespace fs = std::filesystem;

inline fs::path fixture_dir(const std::string& name) {
  return fs::path(KVC_SOURCE_DIR) / "tests/fixtures/models" / name;
}

// A fresh folder under the system temp dir, removed when the test ends.
class ScratchDir {
 public:
  ScratchDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "kvc-model-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
                       "-" + (info ? info->name() : "x");
    path_ = fs::temp_directory_path() / name;
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  fs::path operator/(const std::string& s) const { return path_ / s; }

 private:
  fs::path path_;
};

inline void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << p;
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct StEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::string bytes;  // raw little-endian data
};

inline size_t st_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  return 1;
}

// Raw file: 8-byte length, header text, data.
inline std::string st_raw(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// A well-formed file holding `entries` back to back.
inline std::string st_build(const std::vector<StEntry>& entries) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  h["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& e : entries) {
    const size_t begin = data.size();
    data += e.bytes;
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {begin, data.size()}}};
  }
  return st_raw(h.dump(), data);
}

inline std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// Every weight a GPT-NeoX checkpoint for `c` holds, as F32 filled with small distinct values.
inline std::vector<StEntry> neox_entries(const ModelConfig& c) {
  const int64_t h = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> spec = {
      {"gpt_neox.embed_in.weight", {v, h}}};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    spec.push_back({p + "input_layernorm.weight", {h}});
    spec.push_back({p + "input_layernorm.bias", {h}});
    spec.push_back({p + "post_attention_layernorm.weight", {h}});
    spec.push_back({p + "post_attention_layernorm.bias", {h}});
    spec.push_back({p + "attention.query_key_value.weight", {3 * h, h}});
    spec.push_back({p + "attention.query_key_value.bias", {3 * h}});
    spec.push_back({p + "attention.dense.weight", {h, h}});
    spec.push_back({p + "attention.dense.bias", {h}});
    spec.push_back({p + "mlp.dense_h_to_4h.weight", {f, h}});
    spec.push_back({p + "mlp.dense_h_to_4h.bias", {f}});
    spec.push_back({p + "mlp.dense_4h_to_h.weight", {h, f}});
    spec.push_back({p + "mlp.dense_4h_to_h.bias", {h}});
  }
  spec.push_back({"gpt_neox.final_layer_norm.weight", {h}});
  spec.push_back({"gpt_neox.final_layer_norm.bias", {h}});
  spec.push_back({"embed_out.weight", {v, h}});
  std::vector<StEntry> out;
  int k = 0;
  for (auto& [name, shape] : spec) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> vals(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) vals[i] = 0.001f * static_cast<float>((i * 7 + k) % 101 - 50);
    out.push_back({name, "F32", shape, f32_bytes(vals)});
    ++k;
  }
  return out;
}

// A small valid config, as HF writes it for Pythia.
inline nlohmann::json tiny_config_json() {
  return {{"architectures", {"GPTNeoXForCausalLM"}},
          {"model_type", "gpt_neox"},
          {"hidden_act", "gelu"},
          {"hidden_size", 16},
          {"intermediate_size", 64},
          {"num_attention_heads", 2},
          {"num_hidden_layers", 2},
          {"vocab_size", 24},
          {"max_position_embeddings", 64},
          {"rotary_pct", 0.25},
          {"rotary_emb_base", 10000},
          {"layer_norm_eps", 1e-5},
          {"use_parallel_residual", true},
          {"tie_word_embeddings", false},
          {"torch_dtype", "float32"}};
}

// Writes config.json plus model.safetensors built from `entries` into `dir`.
inline void write_model(const fs::path& dir, const nlohmann::json& config,
                        const std::vector<StEntry>& entries) {
  write_file(dir / "config.json", config.dump(2));
  write_file(dir / "model.safetensors", st_build(entries));
}

// Runs fn and returns the kvc::Error it must throw (fails the test otherwise).
inline kvc::Error expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const kvc::Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-kvc exception: " << e.what();
    return kvc::Error(KVC_ERR_INTERNAL, e.what());
  }
  ADD_FAILURE() << "no error was thrown";
  return kvc::Error(KVC_OK, "");
}

}  // namespace kvc::test

// Asserts the status and that the message mentions every given piece (file, tensor, field...).
#define EXPECT_KVC_ERROR(stmt, expected_status, ...)                         \
  do {                                                                       \
    kvc::Error kvc_err_ = kvc::test::expect_error([&] { (void)(stmt); });    \
    EXPECT_EQ(kvc_err_.status(), expected_status) << kvc_err_.what();        \
    for (const std::string& piece : std::vector<std::string>{__VA_ARGS__})   \
      EXPECT_NE(std::string(kvc_err_.what()).find(piece), std::string::npos) \
          << "message lacks '" << piece << "': " << kvc_err_.what();         \
  } while (0)
