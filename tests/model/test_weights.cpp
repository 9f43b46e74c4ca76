// Weight loading (single file, shards, dtype conversion), synthetic weights, and the bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model/dtype_convert.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "model_test_util.h"

namespace kvc {
namespace {

using nlohmann::json;
using test::ScratchDir;
using test::StEntry;

// ---- scalar conversions ----------------------------------------------------------------------

float from_bits(uint32_t u) { return cvt::f32_from_bits(u); }

TEST(Convert, Bf16RoundsToNearestEven) {
  EXPECT_EQ(cvt::f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0x3f808000)), 0x3f80);  // tie, even stays
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0x3f818000)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0x3f808001)), 0x3f81);  // above the tie
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0x3f807fff)), 0x3f80);  // below the tie
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0xbf818000)), 0xbf82);  // negative tie
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(cvt::f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(cvt::f32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(cvt::f32_to_bf16(NAN), 0x7fc0);
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0x7f800001)), 0x7fc0);  // signalling NaN stays NaN
  EXPECT_EQ(cvt::f32_to_bf16(from_bits(0x00010000)), 0x0001);  // subnormal kept
}

TEST(Convert, Bf16RoundTripIsExact) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = cvt::bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(cvt::f32_to_bf16(f), h) << std::hex << h;
  }
}

TEST(Convert, F16RoundTripIsExact) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = cvt::f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(cvt::f16_to_f32(cvt::f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f, static_cast<float>(static_cast<_Float16>(f))) << std::hex << h;
    ASSERT_EQ(cvt::f32_to_f16(f), h) << std::hex << h;
  }
}

// The compiler's _Float16 conversion (IEEE round-to-nearest-even) is an independent reference.
TEST(Convert, F16MatchesCompilerRounding) {
  auto ref = [](float f) {
    _Float16 h = static_cast<_Float16>(f);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
  };
  std::vector<uint32_t> bits = {0x477fe000, 0x477fefff, 0x477ff000, 0x477fffff, 0x38800000,
                                0x387fffff, 0x33800000, 0x33000000, 0x33000001, 0x32ffffff,
                                0x33c00000, 0x00000001, 0x3f801000, 0x3f803000, 0x3f802fff};
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) bits.push_back(rng());
  for (uint32_t b : bits) {
    for (uint32_t s : {0u, 0x80000000u}) {
      const float f = from_bits(b ^ s);
      if (std::isnan(f)) continue;
      ASSERT_EQ(cvt::f32_to_f16(f), ref(f)) << std::hex << (b ^ s);
    }
  }
  EXPECT_EQ(cvt::f32_to_f16(NAN) & 0x7e00, 0x7e00);
}

// ---- loading the fixtures
// ------------------------------------------------------------------------

std::unique_ptr<ModelWeights> load_fixture(const std::string& name, DType dtype) {
  const auto dir = test::fixture_dir(name);
  return load_weights(dir.string(), load_config_file(dir.string()), dtype);
}

// Every stored tensor of `w` as (name, bytes, dtype) in a fixed order.
struct View {
  std::string name;
  const void* data;
  size_t bytes;
  bool matrix;
};

std::vector<View> views(const ModelWeights& w) {
  const size_t h = static_cast<size_t>(w.config.hidden_size) * 4;
  const size_t f = static_cast<size_t>(w.config.intermediate_size) * 4;
  std::vector<View> v = {{"embed_in", w.embed_in.data, w.embed_in.bytes(), true},
                         {"embed_out", w.embed_out.data, w.embed_out.bytes(), true},
                         {"final_ln_w", w.final_ln_w, h, false},
                         {"final_ln_b", w.final_ln_b, h, false}};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "layer" + std::to_string(l) + ".";
    v.push_back({p + "ln1_w", L.ln1_w, h, false});
    v.push_back({p + "ln1_b", L.ln1_b, h, false});
    v.push_back({p + "ln2_w", L.ln2_w, h, false});
    v.push_back({p + "ln2_b", L.ln2_b, h, false});
    v.push_back({p + "qkv", L.qkv.data, L.qkv.bytes(), true});
    v.push_back({p + "qkv_b", L.qkv_b, 3 * h, false});
    v.push_back({p + "attn_out", L.attn_out.data, L.attn_out.bytes(), true});
    v.push_back({p + "attn_out_b", L.attn_out_b, h, false});
    v.push_back({p + "fc_in", L.fc_in.data, L.fc_in.bytes(), true});
    v.push_back({p + "fc_in_b", L.fc_in_b, f, false});
    v.push_back({p + "fc_out", L.fc_out.data, L.fc_out.bytes(), true});
    v.push_back({p + "fc_out_b", L.fc_out_b, h, false});
  }
  return v;
}

// Bit-for-bit equal storage; `matrices_only` skips the float32 norms and biases.
void expect_identical(const ModelWeights& a, const ModelWeights& b, bool matrices_only = false) {
  ASSERT_EQ(a.dtype, b.dtype);
  ASSERT_EQ(a.bytes(), b.bytes());
  auto va = views(a), vb = views(b);
  ASSERT_EQ(va.size(), vb.size());
  for (size_t i = 0; i < va.size(); ++i) {
    if (matrices_only && !va[i].matrix) continue;
    ASSERT_EQ(va[i].bytes, vb[i].bytes) << va[i].name;
    EXPECT_EQ(std::memcmp(va[i].data, vb[i].data, va[i].bytes), 0) << va[i].name;
  }
}

TEST(Weights, Float32EqualsFileBytes) {
  auto w = load_fixture("neox-par-r25", DType::F32);
  const ModelConfig& c = w->config;
  EXPECT_EQ(w->bytes(), c.n_params() * 4);
  EXPECT_EQ(w->layers.size(), 2u);
  auto file =
      SafetensorsFile::open((test::fixture_dir("neox-par-r25") / "model.safetensors").string());
  auto same = [&](const std::string& name, const void* p) {
    const TensorInfo* t = file->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(std::memcmp(t->data, p, t->nbytes), 0) << name;
  };
  same("gpt_neox.embed_in.weight", w->embed_in.data);
  same("embed_out.weight", w->embed_out.data);
  same("gpt_neox.final_layer_norm.weight", w->final_ln_w);
  same("gpt_neox.final_layer_norm.bias", w->final_ln_b);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w->layers[l];
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    same(p + "input_layernorm.weight", L.ln1_w);
    same(p + "input_layernorm.bias", L.ln1_b);
    same(p + "post_attention_layernorm.weight", L.ln2_w);
    same(p + "post_attention_layernorm.bias", L.ln2_b);
    same(p + "attention.query_key_value.weight", L.qkv.data);
    same(p + "attention.query_key_value.bias", L.qkv_b);
    same(p + "attention.dense.weight", L.attn_out.data);
    same(p + "attention.dense.bias", L.attn_out_b);
    same(p + "mlp.dense_h_to_4h.weight", L.fc_in.data);
    same(p + "mlp.dense_h_to_4h.bias", L.fc_in_b);
    same(p + "mlp.dense_4h_to_h.weight", L.fc_out.data);
    same(p + "mlp.dense_4h_to_h.bias", L.fc_out_b);
    EXPECT_EQ(L.qkv.rows, 3 * c.hidden_size);
    EXPECT_EQ(L.qkv.cols, c.hidden_size);
    EXPECT_EQ(L.fc_in.rows, c.intermediate_size);
    EXPECT_EQ(L.fc_out.cols, c.intermediate_size);
  }
  // The fixture carries the legacy buffers that must be ignored.
  EXPECT_NE(file->find("gpt_neox.layers.0.attention.bias"), nullptr);
  EXPECT_NE(file->find("gpt_neox.layers.0.attention.rotary_emb.inv_freq"), nullptr);
}

TEST(Weights, AllStorageIs64ByteAligned) {
  for (DType dt : {DType::F32, DType::BF16}) {
    auto w = load_fixture("neox-hd40", dt);
    for (const View& v : views(*w))
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % 64, 0u) << v.name;
  }
}

TEST(Weights, ShardedEqualsSingleFile) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    auto single = load_fixture("neox-par-r25", dt);
    auto sharded = load_fixture("neox-sharded", dt);
    expect_identical(*single, *sharded);
  }
}

// neox-bf16 / neox-f16 hold neox-par-r25's weights as rounded by torch's .to(dtype): converting
// the float32 fixture while loading must give exactly those bits.
TEST(Weights, Bf16ConversionMatchesTorch) {
  auto converted = load_fixture("neox-par-r25", DType::BF16);
  auto stored = load_fixture("neox-bf16", DType::BF16);
  expect_identical(*converted, *stored, /*matrices_only=*/true);
  EXPECT_EQ(converted->dtype, DType::BF16);
  EXPECT_EQ(converted->layers[0].qkv.dtype, DType::BF16);
  // Norms and biases stay float32, holding the bf16-rounded values here.
  auto f32 = load_fixture("neox-par-r25", DType::F32);
  const float b = f32->layers[1].qkv_b[5];
  EXPECT_EQ(stored->layers[1].qkv_b[5], cvt::bf16_to_f32(cvt::f32_to_bf16(b)));
}

TEST(Weights, F16ConversionMatchesTorch) {
  auto converted = load_fixture("neox-par-r25", DType::F16);
  auto stored = load_fixture("neox-f16", DType::F16);
  expect_identical(*converted, *stored, /*matrices_only=*/true);
  // Norms and biases stay float32, holding the f16-rounded values here.
  auto f32 = load_fixture("neox-par-r25", DType::F32);
  for (int i = 0; i < f32->config.hidden_size; ++i)
    ASSERT_EQ(stored->layers[0].attn_out_b[i],
              cvt::f16_to_f32(cvt::f32_to_f16(f32->layers[0].attn_out_b[i])));
}

TEST(Weights, HalfFilesWidenToFloat32) {
  auto bf = load_fixture("neox-bf16", DType::F32);
  auto src = SafetensorsFile::open((test::fixture_dir("neox-bf16") / "model.safetensors").string());
  const TensorInfo* t = src->find("gpt_neox.layers.0.mlp.dense_h_to_4h.weight");
  ASSERT_NE(t, nullptr);
  const auto* out = static_cast<const float*>(bf->layers[0].fc_in.data);
  for (int64_t i = 0; i < t->numel(); ++i) {
    uint16_t h;
    std::memcpy(&h, t->data + 2 * i, 2);
    ASSERT_EQ(out[i], cvt::bf16_to_f32(h)) << i;
  }
  // f16 -> bf16 goes through float32 and rounds once.
  auto f16_as_bf16 = load_fixture("neox-f16", DType::BF16);
  auto f16_as_f32 = load_fixture("neox-f16", DType::F32);
  const auto* a = static_cast<const uint16_t*>(f16_as_bf16->embed_out.data);
  const auto* b = static_cast<const float*>(f16_as_f32->embed_out.data);
  for (int64_t i = 0; i < f16_as_f32->embed_out.rows * f16_as_f32->embed_out.cols; ++i)
    ASSERT_EQ(a[i], cvt::f32_to_bf16(b[i])) << i;
}

TEST(Weights, OtherFixturesLoad) {
  auto seq = load_fixture("neox-seq-r100", DType::F32);
  EXPECT_EQ(seq->layers.size(), 3u);
  auto hd = load_fixture("neox-hd40", DType::F16);
  EXPECT_EQ(hd->layers[1].qkv.rows, 360);
  const size_t h = 120, f = 480, v = 128;
  const size_t matrices = 2 * v * h + 2 * (3 * h * h + h * h + 2 * f * h);
  const size_t vectors = 2 * h + 2 * (4 * h + 3 * h + h + f + h);
  EXPECT_EQ(hd->bytes(), matrices * 2 + vectors * 4);
  EXPECT_EQ(matrices + vectors, hd->config.n_params());
}

TEST(Weights, ThreadCountDoesNotChangeResult) {
  const auto dir = test::fixture_dir("neox-hd40").string();
  const ModelConfig c = load_config_file(dir);
  expect_identical(*load_weights(dir, c, DType::BF16, 1), *load_weights(dir, c, DType::BF16, 3));
}

TEST(Weights, IgnoresNonWeightTensorsWithOtherNames) {
  ScratchDir d;
  json cfg = test::tiny_config_json();
  auto entries = test::neox_entries(parse_config_json(cfg.dump(), "c"));
  entries.push_back({"training_step", "I64", {}, std::string(8, '\0')});
  entries.push_back({"gpt_neox.rotary_emb.inv_freq", "F32", {1}, test::f32_bytes({1.0f})});
  test::write_model(d.path(), cfg, entries);
  auto w = load_weights(d.str(), load_config_file(d.str()), DType::F32);
  EXPECT_EQ(w->layers.size(), 2u);
}

// ---- bad input ---------------------------------------------------------------------------------

class WeightsBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_json = test::tiny_config_json();
    cfg = parse_config_json(cfg_json.dump(), "config.json");
    entries = test::neox_entries(cfg);
  }
  StEntry* entry(const std::string& name) {
    for (auto& e : entries)
      if (e.name == name) return &e;
    ADD_FAILURE() << "no entry " << name;
    return nullptr;
  }
  void write() { test::write_model(dir.path(), cfg_json, entries); }
  std::unique_ptr<ModelWeights> load() {
    return load_weights(dir.str(), load_config_file(dir.str()), DType::F32);
  }
  std::string model_file() const { return (dir / "model.safetensors").string(); }

  ScratchDir dir;
  json cfg_json;
  ModelConfig cfg;
  std::vector<StEntry> entries;
};

TEST_F(WeightsBadInput, HelperModelIsValid) {
  write();
  auto w = load();
  EXPECT_EQ(w->bytes(), cfg.n_params() * 4);
}

TEST_F(WeightsBadInput, MissingFolder) {
  EXPECT_KVC_ERROR(load_weights(dir.str() + "/nope", cfg, DType::F32), KVC_ERR_IO,
                   dir.str() + "/nope", "does not exist");
}

TEST_F(WeightsBadInput, MissingModelSafetensors) {
  test::write_file(dir / "config.json", cfg_json.dump());
  EXPECT_KVC_ERROR(load(), KVC_ERR_IO, dir.str(), "model.safetensors");
}

TEST_F(WeightsBadInput, OnlyPytorchBin) {
  test::write_file(dir / "pytorch_model.bin", "PK");
  EXPECT_KVC_ERROR(load_weights(dir.str(), cfg, DType::F32), KVC_ERR_IO, "pytorch_model.bin",
                   "safetensors");
}

TEST_F(WeightsBadInput, TruncatedFile) {
  write();
  std::string bytes = test::read_file(model_file());
  test::write_file(model_file(), bytes.substr(0, bytes.size() / 2));
  EXPECT_KVC_ERROR(load(), KVC_ERR_FORMAT, model_file(), "outside the data area");
}

TEST_F(WeightsBadInput, TruncatedHeader) {
  write();
  test::write_file(dir / "model.safetensors", test::read_file(model_file()).substr(0, 40));
  EXPECT_KVC_ERROR(load(), KVC_ERR_FORMAT, model_file(), "header length", "exceeds the file");
}

TEST_F(WeightsBadInput, HeaderNotJson) {
  write();
  test::write_file(dir / "model.safetensors", test::st_raw("{\"gpt_neox.embed_in.weight\": [", ""));
  EXPECT_KVC_ERROR(load(), KVC_ERR_FORMAT, model_file(), "not valid JSON");
}

TEST_F(WeightsBadInput, ShapeDiffersFromConfig) {
  StEntry* e = entry("gpt_neox.layers.1.mlp.dense_h_to_4h.weight");
  e->shape = {32, 32};  // same byte count as [64, 16]
  write();
  EXPECT_KVC_ERROR(load(), KVC_ERR_FORMAT, model_file(),
                   "gpt_neox.layers.1.mlp.dense_h_to_4h.weight", "[32, 32]", "expected [64, 16]");
}

TEST_F(WeightsBadInput, ConfigDiffersFromCheckpoint) {
  // The same folder under a config with a wider hidden size: the first tensor checked fails.
  write();
  json other = cfg_json;
  other["hidden_size"] = 32;
  EXPECT_KVC_ERROR(load_weights(dir.str(), parse_config_json(other.dump(), "c"), DType::F32),
                   KVC_ERR_FORMAT, "gpt_neox.embed_in.weight", "[24, 16]", "expected [24, 32]");
}

TEST_F(WeightsBadInput, UnsupportedDtype) {
  StEntry* e = entry("gpt_neox.layers.0.attention.dense.weight");
  e->dtype = "I32";
  write();
  EXPECT_KVC_ERROR(load(), KVC_ERR_UNSUPPORTED, model_file(), "unsupported dtype I32",
                   "gpt_neox.layers.0.attention.dense.weight");
}

TEST_F(WeightsBadInput, Float64IsUnsupported) {
  StEntry* e = entry("gpt_neox.final_layer_norm.bias");
  e->dtype = "F64";
  e->bytes += e->bytes;
  write();
  EXPECT_KVC_ERROR(load(), KVC_ERR_UNSUPPORTED, "F64", "gpt_neox.final_layer_norm.bias");
}

TEST_F(WeightsBadInput, MissingWeight) {
  std::erase_if(entries, [](const StEntry& e) { return e.name == "embed_out.weight"; });
  write();
  EXPECT_KVC_ERROR(load(), KVC_ERR_NOT_FOUND, model_file(), "missing weight", "'embed_out.weight'");
}

TEST_F(WeightsBadInput, UnknownWeightLikeTensor) {
  entries.push_back({"gpt_neox.layers.0.attention.q_proj.weight",
                     "F32",
                     {16, 16},
                     std::string(16 * 16 * 4, '\0')});
  write();
  EXPECT_KVC_ERROR(load(), KVC_ERR_FORMAT, model_file(), "unexpected tensor",
                   "gpt_neox.layers.0.attention.q_proj.weight");
}

TEST_F(WeightsBadInput, MoreLayersThanConfig) {
  entries.push_back(
      {"gpt_neox.layers.2.attention.dense.bias", "F32", {16}, std::string(16 * 4, '\0')});
  write();
  EXPECT_KVC_ERROR(load(), KVC_ERR_FORMAT, "gpt_neox.layers.2.attention.dense.bias", "layer 2",
                   "num_hidden_layers 2");
}

// ---- shards ------------------------------------------------------------------------------------

// Copies the sharded fixture into the scratch folder for mutation.
void copy_sharded(const ScratchDir& d) {
  for (const auto& e : test::fs::directory_iterator(test::fixture_dir("neox-sharded")))
    test::fs::copy_file(e.path(), d / e.path().filename().string());
}

TEST(ShardsBadInput, MissingShard) {
  ScratchDir d;
  copy_sharded(d);
  test::fs::remove(d / "model-00003-of-00004.safetensors");
  EXPECT_KVC_ERROR(load_weights(d.str(), load_config_file(d.str()), DType::F32), KVC_ERR_IO,
                   "model.safetensors.index.json", "'model-00003-of-00004.safetensors'",
                   "does not exist");
}

TEST(ShardsBadInput, IndexNotJson) {
  ScratchDir d;
  copy_sharded(d);
  test::write_file(d / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_KVC_ERROR(load_weights(d.str(), load_config_file(d.str()), DType::F32), KVC_ERR_FORMAT,
                   "model.safetensors.index.json", "not valid JSON");
}

TEST(ShardsBadInput, IndexWithoutWeightMap) {
  ScratchDir d;
  copy_sharded(d);
  test::write_file(d / "model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_KVC_ERROR(load_weights(d.str(), load_config_file(d.str()), DType::F32), KVC_ERR_FORMAT,
                   "model.safetensors.index.json", "weight_map");
}

TEST(ShardsBadInput, IndexPointsAtWrongShard) {
  ScratchDir d;
  copy_sharded(d);
  json idx = json::parse(test::read_file(d / "model.safetensors.index.json"));
  idx["weight_map"]["embed_out.weight"] = "model-00001-of-00004.safetensors";
  test::write_file(d / "model.safetensors.index.json", idx.dump());
  EXPECT_KVC_ERROR(load_weights(d.str(), load_config_file(d.str()), DType::F32), KVC_ERR_FORMAT,
                   "embed_out.weight", "model-00001-of-00004.safetensors");
}

TEST(ShardsBadInput, TensorInTwoShards) {
  ScratchDir d;
  copy_sharded(d);
  // Shard 4 gains a second copy of a tensor that lives in shard 1.
  auto s1 = SafetensorsFile::open((d / "model-00001-of-00004.safetensors").string());
  auto s4 = SafetensorsFile::open((d / "model-00004-of-00004.safetensors").string());
  std::vector<StEntry> entries;
  for (const auto& t : s4->tensors())
    entries.push_back({t.name, t.dtype_name, t.shape,
                       std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
  const TensorInfo* dup = s1->find("gpt_neox.final_layer_norm.bias");
  ASSERT_NE(dup, nullptr);
  entries.push_back({dup->name, dup->dtype_name, dup->shape,
                     std::string(reinterpret_cast<const char*>(dup->data), dup->nbytes)});
  s4.reset();
  test::write_file(d / "model-00004-of-00004.safetensors", test::st_build(entries));
  EXPECT_KVC_ERROR(load_weights(d.str(), load_config_file(d.str()), DType::F32), KVC_ERR_FORMAT,
                   "gpt_neox.final_layer_norm.bias", "twice");
}

TEST(ShardsBadInput, ShardNameEscapesFolder) {
  ScratchDir d;
  copy_sharded(d);
  json idx = json::parse(test::read_file(d / "model.safetensors.index.json"));
  idx["weight_map"]["embed_out.weight"] = "../model-00004-of-00004.safetensors";
  test::write_file(d / "model.safetensors.index.json", idx.dump());
  EXPECT_KVC_ERROR(load_weights(d.str(), load_config_file(d.str()), DType::F32), KVC_ERR_FORMAT,
                   "embed_out.weight", "../model-00004");
}

// ---- synthetic ---------------------------------------------------------------------------------

ModelConfig small_config() {
  ModelConfig c = synthetic_config("pythia-70m");
  c.n_layers = 2;
  c.vocab_size = 1000;
  c.name = "small";
  return c;
}

TEST(Synthetic, DeterministicForASeed) {
  const ModelConfig c = small_config();
  auto a = synthetic_weights(c, DType::F32, 42, 1);
  auto b = synthetic_weights(c, DType::F32, 42, 2);
  expect_identical(*a, *b);
  auto other = synthetic_weights(c, DType::F32, 43, 2);
  EXPECT_NE(std::memcmp(a->layers[0].qkv.data, other->layers[0].qkv.data, a->layers[0].qkv.bytes()),
            0);
  EXPECT_NE(std::memcmp(a->embed_in.data, other->embed_in.data, a->embed_in.bytes()), 0);
  // Different tensors of one model differ too.
  EXPECT_NE(std::memcmp(a->layers[0].attn_out.data, a->layers[1].attn_out.data,
                        a->layers[0].attn_out.bytes()),
            0);
}

TEST(Synthetic, PythiaLikeStatistics) {
  const ModelConfig c = small_config();
  auto w = synthetic_weights(c, DType::F32, 1);
  const auto* q = static_cast<const float*>(w->layers[1].fc_in.data);
  const size_t n = static_cast<size_t>(w->layers[1].fc_in.rows * w->layers[1].fc_in.cols);
  double sum = 0, sq = 0, mx = 0;
  for (size_t i = 0; i < n; ++i) {
    sum += q[i];
    sq += double(q[i]) * q[i];
    mx = std::max(mx, std::fabs(double(q[i])));
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 2e-4);
  EXPECT_NEAR(sd, 0.02, 5e-4);
  EXPECT_LT(mx, 0.0700);  // Irwin-Hall(4) is bounded at sqrt(12) sigma
  for (int i = 0; i < c.hidden_size; ++i) {
    ASSERT_EQ(w->layers[0].ln1_w[i], 1.0f);
    ASSERT_EQ(w->layers[0].ln2_b[i], 0.0f);
    ASSERT_EQ(w->final_ln_w[i], 1.0f);
  }
  EXPECT_NE(w->layers[0].qkv_b[0], 0.0f);
  EXPECT_EQ(w->bytes(), c.n_params() * 4);
}

TEST(Synthetic, HalfTypesAreRoundedFloat32) {
  const ModelConfig c = small_config();
  auto f = synthetic_weights(c, DType::F32, 9);
  auto b = synthetic_weights(c, DType::BF16, 9);
  auto h = synthetic_weights(c, DType::F16, 9);
  const auto* fv = static_cast<const float*>(f->embed_out.data);
  const auto* bv = static_cast<const uint16_t*>(b->embed_out.data);
  const auto* hv = static_cast<const uint16_t*>(h->embed_out.data);
  for (int64_t i = 0; i < f->embed_out.rows * f->embed_out.cols; ++i) {
    ASSERT_EQ(bv[i], cvt::f32_to_bf16(fv[i]));
    ASSERT_EQ(hv[i], cvt::f32_to_f16(fv[i]));
  }
  EXPECT_EQ(b->layers[0].qkv_b[3], f->layers[0].qkv_b[3]);  // biases stay float32
  EXPECT_EQ(b->bytes(), f->bytes() - 2 * (2 * size_t(c.vocab_size) * c.hidden_size +
                                          c.n_layers * size_t(12) * c.hidden_size * c.hidden_size));
}

}  // namespace
}  // namespace kvc
