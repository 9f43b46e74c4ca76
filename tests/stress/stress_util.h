// Shared pieces of the determinism and concurrency tests: the embedded model, a text long
// enough to make every policy evict, and NLLs scored through the public C ABI.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kvc/kvc.h"

namespace kvc::stress {

struct ModelDeleter {
  void operator()(kvc_model* m) const { kvc_model_free(m); }
};
using ModelPtr = std::unique_ptr<kvc_model, ModelDeleter>;
struct SessionDeleter {
  void operator()(kvc_session* s) const { kvc_session_free(s); }
};
using SessionPtr = std::unique_ptr<kvc_session, SessionDeleter>;

inline ModelPtr load_model(int threads) {
  kvc_model_options o;
  kvc_model_options_init(&o);
  o.backend = KVC_BACKEND_CPU;
  o.weight_dtype = KVC_DTYPE_F32;
  o.n_threads = threads;
  kvc_model* m = nullptr;
  const std::string path = std::string(KVC_SOURCE_DIR) + "/models/kjv-mini";
  EXPECT_EQ(kvc_model_load(path.c_str(), &o, &m), KVC_OK) << kvc_last_error();
  return ModelPtr(m);
}

// One policy configuration; budgets are small so that eviction happens many times in the text.
struct Config {
  const char* name;
  const char* policy;  // nullptr: the built-in full cache
  std::vector<kvc_param> params;
  kvc_position_mode positions;
};

inline const std::vector<Config>& configs() {
  static const std::vector<Config> all = {
      {"baseline", nullptr, {}, KVC_POSITIONS_SHIFT},
      {"streaming", "streaming", {{"start_size", "4"}, {"recent_size", "28"}}, KVC_POSITIONS_SHIFT},
      {"h2o", "h2o",
       {{"start_size", "2"}, {"heavy_size", "12"}, {"recent_size", "12"}},
       KVC_POSITIONS_ORIGINAL},
      {"h2o_shared", "h2o",
       {{"heavy_size", "8"}, {"recent_size", "16"}, {"scope", "shared"}, {"score_layers", "0"}},
       KVC_POSITIONS_SHIFT},
      {"lazy_h2o", "lazy_h2o",
       {{"heavy_size", "8"}, {"recent_size", "16"}, {"update_interval", "5"}},
       KVC_POSITIONS_SHIFT},
      {"sepllm", "sepllm",
       {{"start_size", "4"}, {"separator_size", "8"}, {"local_size", "16"}, {"cache_size", "40"}},
       KVC_POSITIONS_SHIFT},
      {"unified", "unified",
       {{"start_size", "4"}, {"heavy_size", "6"}, {"separator_size", "6"}, {"local_size", "12"}},
       KVC_POSITIONS_ORIGINAL},
  };
  return all;
}

// About 200 tokens of KJV text (tests/bindings/sample.txt, repeated with verse numbers so the
// repetitions differ).
inline std::vector<int32_t> text_tokens(const kvc_model* model, size_t n = 200) {
  std::ifstream f(std::string(KVC_SOURCE_DIR) + "/tests/bindings/sample.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  const kvc_tokenizer* tok = kvc_model_tokenizer(model);
  EXPECT_NE(tok, nullptr);
  std::vector<int32_t> out;
  for (int verse = 1; out.size() < n; ++verse) {
    const std::string text = std::to_string(verse) + " " + ss.str();
    std::vector<int32_t> ids(text.size() + 8);
    size_t count = 0;
    EXPECT_EQ(kvc_tokenize(tok, text.data(), text.size(), ids.data(), ids.size(), &count), KVC_OK)
        << kvc_last_error();
    ids.resize(count);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  out.resize(n);
  return out;
}

inline SessionPtr make_session(kvc_model* model, const Config& c) {
  kvc_session_options o;
  kvc_session_options_init(&o);
  o.policy = c.policy;
  o.params = c.params.data();
  o.n_params = c.params.size();
  o.positions = c.positions;
  o.policy_path = KVC_BUILD_POLICY_DIR;
  kvc_session* s = nullptr;
  EXPECT_EQ(kvc_session_create(model, &o, &s), KVC_OK) << c.name << ": " << kvc_last_error();
  return SessionPtr(s);
}

// Teacher-forced NLLs, one token per step (the policy is consulted after every token).
inline std::vector<float> score(kvc_session* s, const std::vector<int32_t>& tokens) {
  std::vector<float> nll(tokens.size() - 1, -1.0f);
  kvc_score_options so;
  kvc_score_options_init(&so);
  so.mode = KVC_SCORE_STREAM;
  EXPECT_EQ(kvc_session_score(s, tokens.data(), tokens.size(), &so, nll.data(), nll.size()),
            KVC_OK)
      << kvc_last_error();
  return nll;
}

inline bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, static_cast<double>(std::abs(a[i] - b[i])));
  return m;
}

}  // namespace kvc::stress
