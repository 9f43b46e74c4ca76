// Golden parity of every policy through the public C ABI: for each
// tests/fixtures/policies/*.json (written by tools/reference/policy_reference.py), score the
// fixture's tokens with the fixture's policy, parameters and position mode, and compare the
// per-token NLL (within 1e-4 nats, fp32) and the entries kept at the end in every
// (layer, head).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvc/kvc.h"

namespace {

constexpr double kNllTolerance = 1e-4;
const std::string kFixtures = std::string(KVC_SOURCE_DIR) + "/tests/fixtures/policies";

std::vector<std::string> fixture_names() {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(kFixtures, ec))
    if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A JSON parameter value in the kvc_param text syntax.
std::string param_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_array()) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) s += ',';  // appended piecewise: GCC 12 warns (-Wrestrict) on "," + string
      s += param_text(v[i]);
    }
    return s;
  }
  return v.dump();
}

class GoldenPolicy : public testing::TestWithParam<std::string> {};

TEST_P(GoldenPolicy, MatchesTheReference) {
  std::ifstream in(kFixtures + "/" + GetParam() + ".json");
  ASSERT_TRUE(in.good()) << GetParam();
  const nlohmann::json fx = nlohmann::json::parse(in);
  // "model" names a fixture folder (tests/fixtures/models/<name>) or, with a slash, a path
  // relative to the repository (the embedded models/kjv-mini).
  const std::string model_name = fx["model"].get<std::string>();
  const bool in_fixtures = model_name.find('/') == std::string::npos;
  const std::string model_dir = std::string(KVC_SOURCE_DIR) +
                                (in_fixtures ? "/tests/fixtures/models/" : "/") + model_name;

  kvc_model_options mo;
  kvc_model_options_init(&mo);
  mo.backend = KVC_BACKEND_CPU;
  mo.weight_dtype = KVC_DTYPE_F32;
  kvc_model* model = nullptr;
  ASSERT_EQ(kvc_model_load(model_dir.c_str(), &mo, &model), KVC_OK) << kvc_last_error();

  std::vector<std::string> keys, values;
  for (auto& [k, v] : fx["params"].items()) {
    keys.push_back(k);
    values.push_back(param_text(v));
  }
  std::vector<kvc_param> params;
  for (size_t i = 0; i < keys.size(); ++i) params.push_back({keys[i].c_str(), values[i].c_str()});

  const std::string policy = fx["policy"].get<std::string>();
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = policy.c_str();
  so.params = params.data();
  so.n_params = params.size();
  so.positions =
      fx["positions"] == "original" ? KVC_POSITIONS_ORIGINAL : KVC_POSITIONS_SHIFT;
  so.policy_path = KVC_BUILD_POLICY_DIR;
  kvc_session* session = nullptr;
  ASSERT_EQ(kvc_session_create(model, &so, &session), KVC_OK) << kvc_last_error();

  const std::vector<int32_t> tokens = fx["tokens"].get<std::vector<int32_t>>();
  const std::vector<double> want = fx["nll"].get<std::vector<double>>();
  ASSERT_EQ(want.size() + 1, tokens.size());
  std::vector<float> nll(want.size());
  kvc_score_options sc;
  kvc_score_options_init(&sc);
  sc.mode = KVC_SCORE_STREAM;
  ASSERT_EQ(kvc_session_score(session, tokens.data(), tokens.size(), &sc, nll.data(), nll.size()),
            KVC_OK)
      << kvc_last_error();

  double worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(static_cast<double>(nll[i]) - want[i]);
    if (d > worst) worst = d, worst_at = i;
  }
  EXPECT_LE(worst, kNllTolerance) << GetParam() << ": token " << worst_at << " has NLL "
                                  << nll[worst_at] << ", reference " << want[worst_at];

  // The entries each (layer, head) holds at the end.
  for (auto& [key, kept] : fx["kept_final"].items()) {
    int layer = -1, head = -1;
    ASSERT_EQ(std::sscanf(key.c_str(), "layer%d_head%d", &layer, &head), 2) << key;
    std::vector<int64_t> positions(tokens.size());
    size_t n = 0;
    ASSERT_EQ(kvc_session_cache_entries(session, layer, head, positions.data(), nullptr,
                                        positions.size(), &n),
              KVC_OK)
        << kvc_last_error();
    positions.resize(n);
    EXPECT_EQ(positions, kept.get<std::vector<int64_t>>()) << GetParam() << " " << key;
  }
  kvc_session_free(session);
  kvc_model_free(model);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenPolicy, testing::ValuesIn(fixture_names()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

}  // namespace
