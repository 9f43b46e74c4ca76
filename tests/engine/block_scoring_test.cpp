// Exact block scoring (docs/block-scoring.md): for every bundled policy, both position modes
// and the golden checkpoints, scoring a text B tokens per forward pass gives the per-token NLL
// of the token-by-token run (within 1e-5 nats; in practice bit-identical: each token's
// arithmetic is the same) and the same entries in every (layer, head) after every block.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "test_util.h"

namespace kvc::testing {
namespace {

constexpr double kNllTolerance = 1e-5;

struct PolicyCase {
  std::string name;     // test label
  std::string policy;
  std::vector<std::pair<std::string, std::string>> params;
  std::string path;     // the path kvc_session_score_report must name for B > 1
};

// Small sizes so that a few hundred tokens evict a lot; separators are the fixture models'
// frequent ids.
const std::vector<PolicyCase>& policy_cases() {
  static const std::vector<PolicyCase> cases = {
      {"dense", "", {}, "block"},
      {"streaming", "streaming", {{"start_size", "2"}, {"recent_size", "9"}}, "block"},
      {"h2o_per_head", "h2o", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}},
       "block"},
      {"h2o_shared_layer0", "h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}, {"scope", "shared"}},
       "block"},
      {"h2o_shared_all_layers", "h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}, {"scope", "shared"},
        {"score_layers", "0,1"}},
       "token"},
      {"lazy_h2o", "lazy_h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}, {"update_interval", "3"}},
       "block"},
      {"sepllm", "sepllm",
       {{"start_size", "2"}, {"separator_size", "4"}, {"local_size", "8"}, {"cache_size", "20"},
        {"separators", "3,5,7,11,13,17,19,23"}},
       "block"},
      {"unified_lazy_shared", "unified",
       {{"start_size", "2"}, {"separator_size", "3"}, {"heavy_size", "4"}, {"local_size", "6"},
        {"separators", "3,5,7,11,13"}, {"scope", "shared"}, {"update_interval", "4"}},
       "block"},
      {"unified_per_head", "unified",
       {{"start_size", "2"}, {"separator_size", "3"}, {"heavy_size", "4"}, {"local_size", "6"},
        {"separators", "3,5,7,11,13"}},
       "block"},
      // The methods beyond the seed, and Ada-KV's adaptive allocation.
      {"tova_per_layer", "tova", {{"budget", "11"}, {"start_size", "2"}}, "block"},
      {"tova_per_head_adaptive", "tova",
       {{"budget", "11"}, {"start_size", "2"}, {"granularity", "per_head"},
        {"allocation", "adaptive"}},
       "block"},
      {"snapkv", "snapkv",
       {{"window", "4"}, {"kernel_size", "3"}, {"start_size", "2"}, {"heavy_size", "5"}},
       "block"},
      {"pyramidkv_adaptive", "pyramidkv",
       {{"window", "4"}, {"kernel_size", "3"}, {"pooling", "max"}, {"start_size", "2"},
        {"heavy_size", "5"}, {"beta", "2"}, {"allocation", "adaptive"}},
       "block"},
      {"knorm", "knorm", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}},
       "block"},
      {"keydiff", "keydiff", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}},
       "block"},
      {"scissorhands", "scissorhands",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}, {"history", "6"}},
       "block"},
      {"h2o_adaptive", "h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"},
        {"allocation", "adaptive"}, {"floor", "0.4"}},
       "block"},
      {"lazy_h2o_adaptive", "lazy_h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}, {"update_interval", "3"},
        {"allocation", "adaptive"}},
       "block"},
  };
  return cases;
}

struct Scored {
  std::vector<float> nll;
  std::vector<int64_t> cache_entries, evicted;
  std::vector<std::vector<int64_t>> kept_after_block;  // every (layer, head), block by block
  std::string path, reason;
};

std::vector<int64_t> all_entries(kvc_session* s, int32_t layers, int32_t heads) {
  std::vector<int64_t> out;
  for (int32_t l = 0; l < layers; ++l)
    for (int32_t h = 0; h < heads; ++h) {
      std::vector<int64_t> pos(4096);
      size_t n = 0;
      EXPECT_EQ(kvc_session_cache_entries(s, l, h, pos.data(), nullptr, pos.size(), &n), KVC_OK);
      out.insert(out.end(), pos.begin(), pos.begin() + static_cast<int64_t>(n));
      out.push_back(-1);  // separates the heads
    }
  return out;
}

// Scores `tokens` in calls of `chunk` tokens with blocks of `block`, recording the cache after
// each call.
Scored score(kvc_model* model, const PolicyCase& pc, kvc_position_mode positions,
             const std::vector<int32_t>& tokens, int32_t block, size_t chunk) {
  std::vector<kvc_param> params;
  for (const auto& [k, v] : pc.params) params.push_back({k.c_str(), v.c_str()});
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = pc.policy.empty() ? nullptr : pc.policy.c_str();
  so.policy_path = KVC_BUILD_POLICY_DIR;
  so.params = params.data();
  so.n_params = params.size();
  so.positions = positions;
  kvc_session* raw = nullptr;
  EXPECT_EQ(kvc_session_create(model, &so, &raw), KVC_OK) << kvc_last_error();
  SessionPtr s(raw);
  kvc_model_info info;
  kvc_model_info_init(&info);
  EXPECT_EQ(kvc_model_get_info(model, &info), KVC_OK);

  Scored out;
  out.nll.assign(tokens.size(), 0.f);
  out.cache_entries.assign(tokens.size(), -1);
  out.evicted.assign(tokens.size(), -1);
  for (size_t off = 0; off < tokens.size(); off += chunk) {
    const size_t n = std::min(chunk, tokens.size() - off);
    kvc_score_options o;
    kvc_score_options_init(&o);
    o.block_size = block;
    o.cache_entries = &out.cache_entries[off];
    o.evicted = &out.evicted[off];
    // Token i's NLL needs token i+1: score one token more than the chunk when there is one.
    const size_t fed = n;
    EXPECT_EQ(kvc_session_score(s.get(), &tokens[off], fed, &o, &out.nll[off], fed - 1), KVC_OK)
        << kvc_last_error();
    out.kept_after_block.push_back(all_entries(s.get(), info.n_layers, info.n_heads));
    kvc_score_report r;
    kvc_score_report_init(&r);
    EXPECT_EQ(kvc_session_score_report(s.get(), &r), KVC_OK);
    out.path = r.path;
    out.reason = r.reason;
  }
  return out;
}

std::vector<int32_t> text_tokens(int32_t vocab, size_t n) {
  std::vector<int32_t> t;
  uint32_t x = 12345;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    // Frequent small ids (the separators above) between others.
    t.push_back(i % 5 == 0 ? static_cast<int32_t>(3 + (x >> 16) % 21)
                           : static_cast<int32_t>(3 + (x >> 8) % static_cast<uint32_t>(vocab - 3)));
  }
  return t;
}

using Param = std::tuple<std::string, size_t, kvc_position_mode>;  // model, case index, mode

class BlockScoring : public ::testing::TestWithParam<Param> {};

TEST_P(BlockScoring, EqualsTokenByToken) {
  const auto& [model_name, case_index, positions] = GetParam();
  const PolicyCase& pc = policy_cases()[case_index];
  const std::string path =
      model_name == "kjv-mini" ? source_dir() + "/models/kjv-mini" : fixture_model(model_name);
  ModelPtr model = load(path);
  ASSERT_TRUE(model);
  kvc_model_info info;
  kvc_model_info_init(&info);
  ASSERT_EQ(kvc_model_get_info(model.get(), &info), KVC_OK);
  const std::vector<int32_t> tokens = text_tokens(info.vocab_size, 224);
  for (int32_t block : {2, 7, 64}) {
    SCOPED_TRACE("block " + std::to_string(block));
    // Calls of 3 blocks (the last one short) so that blocks start mid-text, as in kvc-eval.
    const size_t chunk = static_cast<size_t>(3 * block - 1);
    const Scored ref = score(model.get(), pc, positions, tokens, 1, chunk);
    const Scored got = score(model.get(), pc, positions, tokens, block, chunk);
    EXPECT_EQ(ref.path, "token");
    EXPECT_EQ(got.path, pc.path) << got.reason;
    if (pc.path == "token") {
      EXPECT_NE(got.reason.find("layers other than layer 0"), std::string::npos);
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
      ASSERT_NEAR(got.nll[i], ref.nll[i], kNllTolerance) << "token " << i;
      ASSERT_EQ(got.cache_entries[i], ref.cache_entries[i]) << "token " << i;
      ASSERT_EQ(got.evicted[i], ref.evicted[i]) << "token " << i;
    }
    ASSERT_EQ(got.kept_after_block.size(), ref.kept_after_block.size());
    for (size_t b = 0; b < ref.kept_after_block.size(); ++b)
      ASSERT_EQ(got.kept_after_block[b], ref.kept_after_block[b]) << "after call " << b;
  }
}

std::vector<Param> all_params() {
  std::vector<Param> out;
  for (const char* model : {"neox-peaked", "neox-par-r25", "neox-seq-r100", "kjv-mini"})
    for (size_t c = 0; c < policy_cases().size(); ++c)
      for (kvc_position_mode m : {KVC_POSITIONS_SHIFT, KVC_POSITIONS_ORIGINAL})
        out.emplace_back(model, c, m);
  return out;
}

INSTANTIATE_TEST_SUITE_P(
    Policies, BlockScoring, ::testing::ValuesIn(all_params()),
    [](const ::testing::TestParamInfo<Param>& info) {
      std::string s = std::get<0>(info.param) + "_" +
                      policy_cases()[std::get<1>(info.param)].name + "_" +
                      (std::get<2>(info.param) == KVC_POSITIONS_SHIFT ? "shift" : "original");
      for (char& c : s)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return s;
    });

TEST(BlockScoringApi, BadBlockSizeAndBuffers) {
  ModelPtr model = load(fixture_model("neox-peaked"));
  SessionPtr s = session(model.get());
  const std::vector<int32_t> tokens = {5, 6, 7};
  kvc_score_options o;
  kvc_score_options_init(&o);
  o.block_size = -1;
  EXPECT_EQ(kvc_session_score(s.get(), tokens.data(), 3, &o, nullptr, 0),
            KVC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvc_last_error()).find("block_size"), std::string::npos);
  o.block_size = 257;
  EXPECT_EQ(kvc_session_score(s.get(), tokens.data(), 3, &o, nullptr, 0),
            KVC_ERR_INVALID_ARGUMENT);
  o.block_size = 0;
  std::vector<float> small(10);
  o.logits = small.data();
  o.logits_capacity = small.size();
  EXPECT_EQ(kvc_session_score(s.get(), tokens.data(), 3, &o, nullptr, 0),
            KVC_ERR_BUFFER_TOO_SMALL);
  EXPECT_NE(std::string(kvc_last_error()).find("logits"), std::string::npos);
}

}  // namespace
}  // namespace kvc::testing
