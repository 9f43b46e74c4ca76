// Golden parity with Hugging Face `tokenizers`: identical ids and an exact round trip, on the
// tricky strings of tests/fixtures/tokenizer/tricky.json and on the whole KJV text.
// Goldens come from tools/reference/make_tokenizer_golden.py; one line per tokenizer below.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sha256.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace kvc {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Names of the golden files in tests/fixtures/tokenizer/golden/ (<name>.tricky.json,
// <name>.kjv.json).
const std::vector<std::string> kGoldenTokenizers = {
    "gpt-neox-20b",
    "kjv-mini",
};

fs::path golden_dir() { return test::source_dir() / "tests/fixtures/tokenizer/golden"; }

std::string hex_to_bytes(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string ids_sha256(const std::vector<int32_t>& ids) {
  test::Sha256 h;
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    const unsigned char le[4] = {static_cast<unsigned char>(u), static_cast<unsigned char>(u >> 8),
                                 static_cast<unsigned char>(u >> 16),
                                 static_cast<unsigned char>(u >> 24)};
    h.update(le, 4);
  }
  return h.hex();
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Loads <name>.<kind>.json and the tokenizer it names; skips when the tokenizer file is
  // absent, fails when the goldens are stale or missing for a present tokenizer.
  void load(const std::string& kind) {
    const fs::path golden_path = golden_dir() / (GetParam() + "." + kind + ".json");
    if (!fs::exists(golden_path)) {
      const fs::path expected = test::source_dir() / "models" / GetParam() / "tokenizer.json";
      if (fs::exists(expected)) {
        ADD_FAILURE() << expected << " exists but " << golden_path << " does not; run "
                      << "tools/reference/make_tokenizer_golden.py golden --tokenizer "
                      << expected << " --name " << GetParam();
        return;
      }
      GTEST_SKIP() << "no goldens for " << GetParam() << " (" << golden_path << ")";
    }
    golden_ = json::parse(test::read_file(golden_path));
    const std::string root = golden_["tokenizer"]["root"];
    const fs::path base = root == "shared" ? test::shared_data_dir() : test::source_dir();
    tokenizer_path_ = base / golden_["tokenizer"]["path"].get<std::string>();
    if (!fs::exists(tokenizer_path_))
      GTEST_SKIP() << "tokenizer file " << tokenizer_path_
                   << " is absent (set KVC_SHARED_DATA_DIR for the shared data)";
    const std::string bytes = test::read_file(tokenizer_path_);
    if (test::sha256_hex(bytes) != golden_["tokenizer_sha256"].get<std::string>()) {
      ADD_FAILURE() << tokenizer_path_ << " differs from the file the goldens were made from; "
                    << "regenerate them with tools/reference/make_tokenizer_golden.py";
      return;
    }
    tokenizer_ = Tokenizer::load_json(bytes, tokenizer_path_.string());
  }

  json golden_;
  fs::path tokenizer_path_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_P(GoldenTest, TrickyStrings) {
  load("tricky");
  if (!tokenizer_) return;  // skipped or failed above
  const json inputs =
      json::parse(test::read_file(test::source_dir() / "tests/fixtures/tokenizer/tricky.json"));
  const json& cases = golden_["cases"];
  ASSERT_EQ(inputs.size(), cases.size()) << "tricky.json changed; regenerate the goldens";
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& in = inputs[i];
    const json& expected = cases[i];
    const std::string name = in["name"];
    ASSERT_EQ(name, expected["name"].get<std::string>());
    // Invalid bytes go in raw: the tokenizer's own U+FFFD replacement is under test.
    const std::string text =
        in.contains("hex") ? hex_to_bytes(in["hex"]) : in["text"].get<std::string>();
    const std::vector<int32_t> ids = tokenizer_->encode(text);
    EXPECT_EQ(ids, expected["ids"].get<std::vector<int32_t>>()) << "case " << name;
    EXPECT_EQ(tokenizer_->decode(ids), expected["decoded"].get<std::string>())
        << "case " << name;
  }
}

TEST_P(GoldenTest, KingJamesBible) {
  load("kjv");
  if (!tokenizer_) return;  // skipped or failed above
  const std::optional<std::string> text = test::kjv_text();
  if (!text) GTEST_SKIP() << "the `bible` program (Debian package bible-kjv) is not available";
  ASSERT_EQ(test::sha256_hex(*text), golden_["text"]["sha256"].get<std::string>())
      << "`bible` printed a different text than the goldens were made from";
  const std::vector<int32_t> ids = tokenizer_->encode(*text);
  ASSERT_EQ(ids.size(), golden_["count"].get<size_t>());
  const auto head = golden_["head"].get<std::vector<int32_t>>();
  const auto tail = golden_["tail"].get<std::vector<int32_t>>();
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + head.size()), head);
  EXPECT_EQ(std::vector<int32_t>(ids.end() - tail.size(), ids.end()), tail);
  EXPECT_EQ(ids_sha256(ids), golden_["ids_sha256"].get<std::string>());
  const std::string decoded = tokenizer_->decode(ids);
  EXPECT_TRUE(decoded == *text) << "the KJV text does not round-trip";
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, GoldenTest, ::testing::ValuesIn(kGoldenTokenizers),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

}  // namespace
}  // namespace kvc
