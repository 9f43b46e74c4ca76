// config.json parsing and the built-in Pythia shapes.
#include <gtest/gtest.h>

#include "model/config.h"
#include "model_test_util.h"

namespace kvc {
namespace {

using nlohmann::json;
using test::ScratchDir;
using test::tiny_config_json;

ModelConfig parse(const json& j) { return parse_config_json(j.dump(), "/m/config.json"); }

TEST(Config, PythiaStyleFixture) {
  ModelConfig c = load_config_file(test::fixture_dir("neox-par-r25").string());
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.intermediate_size, 256);
  EXPECT_EQ(c.vocab_size, 128);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_EQ(c.rotary_ndims, 4);
  EXPECT_EQ(c.rotary_base, 10000.0f);
  EXPECT_EQ(c.layer_norm_eps, 1e-5f);
  EXPECT_TRUE(c.use_parallel_residual);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.name, "neox-par-r25");
}

TEST(Config, RopeParametersSpelling) {
  // transformers 5 writes rope_parameters {rope_theta, partial_rotary_factor} and "dtype".
  ModelConfig c = load_config_file((test::fixture_dir("neox-seq-r100") / "config.json").string());
  EXPECT_EQ(c.n_layers, 3);
  EXPECT_EQ(c.rotary_ndims, 16);
  EXPECT_EQ(c.rotary_base, 10000.0f);
  EXPECT_FALSE(c.use_parallel_residual);
  EXPECT_EQ(c.torch_dtype, "float32");
}

TEST(Config, HeadDimNotPowerOfTwo) {
  ModelConfig c = load_config_file(test::fixture_dir("neox-hd40").string());
  EXPECT_EQ(c.head_dim, 40);
  EXPECT_EQ(c.rotary_ndims, 10);
  EXPECT_EQ(c.rotary_base, 5000.0f);
  EXPECT_EQ(c.layer_norm_eps, 1e-6f);
}

TEST(Config, BothSpellingsAgreeing) {
  // The seed's pythia-2.8b-local config carries both spellings and attention_bias true.
  json j = tiny_config_json();
  j["partial_rotary_factor"] = 0.25;
  j["rope_theta"] = 10000;
  j["attention_bias"] = true;
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rotary_ndims, 2);
  EXPECT_EQ(c.rotary_base, 10000.0f);
}

TEST(Config, TransformersFourFiftyTwoPythia28b) {
  // What transformers 4.52 save_pretrained writes for EleutherAI/pythia-2.8b (the seed's
  // pythia-2.8b-local): both rotary spellings, rope_scaling null, attention_bias true.
  const char* text = R"({
    "architectures": ["GPTNeoXForCausalLM"], "attention_bias": true, "attention_dropout": 0.0,
    "bos_token_id": 0, "classifier_dropout": 0.1, "eos_token_id": 0, "hidden_act": "gelu",
    "hidden_dropout": 0.0, "hidden_size": 2560, "initializer_range": 0.02,
    "intermediate_size": 10240, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
    "model_type": "gpt_neox", "num_attention_heads": 32, "num_hidden_layers": 32,
    "partial_rotary_factor": 0.25, "rope_scaling": null, "rope_theta": 10000,
    "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false,
    "torch_dtype": "float32", "transformers_version": "4.52.4", "use_cache": true,
    "use_parallel_residual": true, "vocab_size": 50304})";
  ModelConfig c = parse_config_json(text, "pythia-2.8b-local/config.json");
  ModelConfig s = synthetic_config("pythia-2.8b");
  EXPECT_EQ(c.name, "pythia-2.8b-local");
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.hidden_size, s.hidden_size);
  EXPECT_EQ(c.n_layers, s.n_layers);
  EXPECT_EQ(c.n_heads, s.n_heads);
  EXPECT_EQ(c.head_dim, 80);
  EXPECT_EQ(c.intermediate_size, s.intermediate_size);
  EXPECT_EQ(c.vocab_size, s.vocab_size);
  EXPECT_EQ(c.rotary_ndims, 20);
  EXPECT_EQ(c.rotary_ndims, s.rotary_ndims);
  EXPECT_EQ(c.n_params(), s.n_params());
}

TEST(Config, SpellingsDisagreeing) {
  json j = tiny_config_json();
  j["partial_rotary_factor"] = 1.0;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "/m/config.json", "rotary_pct",
                   "partial_rotary_factor");
}

TEST(Config, DefaultsFollowTransformers) {
  json j = tiny_config_json();
  for (const char* k :
       {"rotary_pct", "rotary_emb_base", "layer_norm_eps", "max_position_embeddings",
        "use_parallel_residual", "hidden_act", "tie_word_embeddings"})
    j.erase(k);
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rotary_ndims, 2);  // 0.25 * 8
  EXPECT_EQ(c.rotary_base, 10000.0f);
  EXPECT_EQ(c.layer_norm_eps, 1e-5f);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_TRUE(c.use_parallel_residual);
}

// ---- bad input ------------------------------------------------------------------------------

TEST(ConfigBadInput, MissingFolder) {
  EXPECT_KVC_ERROR(load_config_file("/nonexistent/kvc-model/config.json"), KVC_ERR_IO,
                   "'/nonexistent/kvc-model'", "does not exist");
  EXPECT_KVC_ERROR(load_config_file("/nonexistent/kvc-model"), KVC_ERR_IO,
                   "'/nonexistent/kvc-model'", "does not exist");
}

TEST(ConfigBadInput, MissingConfigJson) {
  ScratchDir d;
  EXPECT_KVC_ERROR(load_config_file(d.str()), KVC_ERR_IO, (d / "config.json").string());
}

TEST(ConfigBadInput, NotJson) {
  ScratchDir d;
  test::write_file(d / "config.json", "{\"hidden_size\": 64,,}");
  EXPECT_KVC_ERROR(load_config_file(d.str()), KVC_ERR_FORMAT, (d / "config.json").string(),
                   "not valid JSON");
}

TEST(ConfigBadInput, NotAnObject) {
  EXPECT_KVC_ERROR(parse_config_json("[1, 2]", "cfg.json"), KVC_ERR_FORMAT, "cfg.json", "object");
}

TEST(ConfigBadInput, MissingRequiredKey) {
  for (const char* key : {"hidden_size", "num_attention_heads", "num_hidden_layers",
                          "intermediate_size", "vocab_size"}) {
    json j = tiny_config_json();
    j.erase(key);
    EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "/m/config.json", std::string("'") + key + "'",
                     "missing");
  }
}

TEST(ConfigBadInput, WrongType) {
  json j = tiny_config_json();
  j["hidden_size"] = "64";
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "/m/config.json", "hidden_size", "\"64\"");
  j = tiny_config_json();
  j["num_hidden_layers"] = 2.5;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "num_hidden_layers", "2.5");
  j = tiny_config_json();
  j["use_parallel_residual"] = 1;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "use_parallel_residual");
}

TEST(ConfigBadInput, NonPositiveNumber) {
  json j = tiny_config_json();
  j["vocab_size"] = 0;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "vocab_size", "0");
  j = tiny_config_json();
  j["layer_norm_eps"] = -1;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "layer_norm_eps");
}

// Positive as a double but 0 or infinite as the float the engine uses (a fuzzer finding).
TEST(ConfigBadInput, NumberOutsideFloatRange) {
  json j = tiny_config_json();
  j["layer_norm_eps"] = 1e-50;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "layer_norm_eps", "float range");
  j = tiny_config_json();
  j["rotary_emb_base"] = 1e-300;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "rotary_emb_base", "float range");
  j = tiny_config_json();
  j["rotary_emb_base"] = 1e300;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "rotary_emb_base", "float range");
}

TEST(ConfigBadInput, HiddenNotDivisibleByHeads) {
  json j = tiny_config_json();
  j["num_attention_heads"] = 3;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "hidden_size 16", "num_attention_heads 3");
}

TEST(ConfigBadInput, OddRotaryDims) {
  json j = tiny_config_json();
  j["hidden_size"] = 24;
  j["num_attention_heads"] = 2;  // head_dim 12 * 0.25 = 3
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "/m/config.json", "= 3", "even");
}

TEST(ConfigBadInput, UnsupportedArchitecture) {
  json j = tiny_config_json();
  j["model_type"] = "llama";
  j["architectures"] = {"LlamaForCausalLM"};
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "/m/config.json", "model_type", "llama");
}

TEST(ConfigBadInput, NotACausalLm) {
  json j = tiny_config_json();
  j["architectures"] = {"GPTNeoXForSequenceClassification"};
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "architectures",
                   "GPTNeoXForSequenceClassification");
}

TEST(ConfigBadInput, NoArchitectureAtAll) {
  json j = tiny_config_json();
  j.erase("model_type");
  j.erase("architectures");
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_FORMAT, "model_type", "missing");
}

TEST(ConfigBadInput, UnsupportedHiddenAct) {
  for (const char* act : {"gelu_new", "gelu_fast", "relu"}) {
    json j = tiny_config_json();
    j["hidden_act"] = act;
    EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "/m/config.json", "hidden_act", act);
  }
}

TEST(ConfigBadInput, TiedEmbeddings) {
  json j = tiny_config_json();
  j["tie_word_embeddings"] = true;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "tie_word_embeddings");
}

TEST(ConfigBadInput, AttentionWithoutBias) {
  json j = tiny_config_json();
  j["attention_bias"] = false;
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "attention_bias");
}

TEST(ConfigBadInput, RopeScaling) {
  json j = tiny_config_json();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "rope_scaling");
  j = tiny_config_json();
  j["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 10000}};
  EXPECT_KVC_ERROR(parse(j), KVC_ERR_UNSUPPORTED, "rope_parameters.rope_type", "dynamic");
}

// ---- synthetic shapes ---------------------------------------------------------------------------

TEST(SyntheticConfig, ExactPythiaShapes) {
  struct Expected {
    const char* name;
    int hidden, layers, heads, vocab, rotary;
    size_t params;  // total parameters of the released checkpoints
  };
  const Expected table[] = {
      {"pythia-70m", 512, 6, 8, 50304, 16, 70426624},
      {"pythia-160m", 768, 12, 12, 50304, 16, 162322944},
      {"pythia-410m", 1024, 24, 16, 50304, 16, 405334016},
      {"pythia-1b", 2048, 16, 8, 50304, 64, 1011781632},
      {"pythia-1.4b", 2048, 24, 16, 50304, 32, 1414647808},
      {"pythia-2.8b", 2560, 32, 32, 50304, 20, 2775208960},
      {"pythia-6.9b", 4096, 32, 32, 50432, 32, 6857302016},
      {"pythia-12b", 5120, 36, 40, 50688, 32, 11846072320},
  };
  ASSERT_EQ(synthetic_model_names().size(), std::size(table));
  for (const auto& e : table) {
    ModelConfig c = synthetic_config(e.name);
    EXPECT_EQ(c.name, e.name);
    EXPECT_EQ(c.hidden_size, e.hidden) << e.name;
    EXPECT_EQ(c.n_layers, e.layers) << e.name;
    EXPECT_EQ(c.n_heads, e.heads) << e.name;
    EXPECT_EQ(c.head_dim * c.n_heads, c.hidden_size) << e.name;
    EXPECT_EQ(c.intermediate_size, 4 * e.hidden) << e.name;
    EXPECT_EQ(c.vocab_size, e.vocab) << e.name;
    EXPECT_EQ(c.rotary_ndims, e.rotary) << e.name;
    EXPECT_EQ(c.max_position_embeddings, 2048);
    EXPECT_EQ(c.rotary_base, 10000.0f);
    EXPECT_EQ(c.layer_norm_eps, 1e-5f);
    EXPECT_TRUE(c.use_parallel_residual);
    EXPECT_EQ(c.n_params(), e.params) << e.name;
  }
  EXPECT_EQ(synthetic_config("synthetic:pythia-1b").hidden_size, 2048);
}

TEST(SyntheticConfig, UnknownNameListsValidOnes) {
  EXPECT_KVC_ERROR(synthetic_config("pythia-3b"), KVC_ERR_NOT_FOUND, "pythia-3b", "pythia-70m",
                   "pythia-12b");
}

}  // namespace
}  // namespace kvc
