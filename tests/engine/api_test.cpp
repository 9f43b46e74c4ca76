// The C ABI contract: versions, errors with messages, argument checks, buffer protocol,
// scoring, and the exported symbol set of libkvc.so.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <string>

#include "test_util.h"

namespace kvc::testing {
namespace {

TEST(Api, VersionAndStatusNames) {
  EXPECT_EQ(kvc_abi_version() >> 16, static_cast<uint32_t>(KVC_ABI_VERSION_MAJOR));
  EXPECT_STREQ(kvc_status_name(KVC_ERR_FORMAT), "KVC_ERR_FORMAT");
  EXPECT_STRNE(kvc_version_string(), "");
}

TEST(Api, NullArgumentsAreErrorsNotCrashes) {
  EXPECT_EQ(kvc_model_load(nullptr, nullptr, nullptr), KVC_ERR_INVALID_ARGUMENT);
  kvc_model* m = nullptr;
  EXPECT_EQ(kvc_model_load(nullptr, nullptr, &m), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvc_last_error()).find("path"), std::string::npos);
  EXPECT_EQ(kvc_session_step(nullptr, nullptr, 0, KVC_LOGITS_NONE, nullptr, 0),
            KVC_ERR_INVALID_ARGUMENT);
  kvc_model_free(nullptr);
  kvc_session_free(nullptr);
}

TEST(Api, MissingFolderNamesThePath) {
  kvc_model* m = nullptr;
  EXPECT_EQ(kvc_model_load("/nonexistent/kvc-model", nullptr, &m), KVC_ERR_IO);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(kvc_last_error()).find("/nonexistent/kvc-model"), std::string::npos);
}

TEST(Api, TokenIdAtOrAboveVocabIsRejected) {
  auto model = load(fixture_model("neox-par-r25"));
  auto s = session(model.get());
  const int32_t vocab = vocab_of(model.get());
  const std::array<int32_t, 3> tokens = {1, vocab, 2};
  EXPECT_EQ(kvc_session_step(s.get(), tokens.data(), tokens.size(), KVC_LOGITS_NONE, nullptr, 0),
            KVC_ERR_OUT_OF_RANGE);
  const std::string msg = kvc_last_error();
  EXPECT_NE(msg.find(std::to_string(vocab)), std::string::npos) << msg;
  EXPECT_NE(msg.find("index 1"), std::string::npos) << msg;
  // Nothing was appended: the session is still usable.
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  ASSERT_EQ(kvc_session_cache_stats(s.get(), &st), KVC_OK);
  EXPECT_EQ(st.total_entries, 0);
  const int32_t neg = -1;
  EXPECT_EQ(kvc_session_score(s.get(), &neg, 1, nullptr, nullptr, 0), KVC_ERR_OUT_OF_RANGE);
}

TEST(Api, SmallLogitsBufferIsReported) {
  auto model = load(fixture_model("neox-par-r25"));
  auto s = session(model.get());
  const int32_t t = 3;
  float one = 0;
  EXPECT_EQ(kvc_session_step(s.get(), &t, 1, KVC_LOGITS_LAST, &one, 1), KVC_ERR_BUFFER_TOO_SMALL);
  EXPECT_NE(std::string(kvc_last_error()).find("needed"), std::string::npos);
}

TEST(Api, BadStructSizeIsRejected) {
  kvc_model_options o;
  kvc_model_options_init(&o);
  o.struct_size = 0;
  kvc_model* m = nullptr;
  EXPECT_EQ(kvc_model_load("synthetic:pythia-70m", &o, &m), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvc_last_error()).find("struct_size"), std::string::npos);
}

TEST(Api, ThreadCountOutsideRangeIsRejected) {
  for (int32_t threads : {-1, 4097, 1 << 30}) {
    kvc_model_options o;
    kvc_model_options_init(&o);
    o.n_threads = threads;
    kvc_model* m = nullptr;
    EXPECT_EQ(kvc_model_load("synthetic:pythia-70m", &o, &m), KVC_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(m, nullptr);
    const std::string msg = kvc_last_error();
    EXPECT_NE(msg.find("n_threads: " + std::to_string(threads)), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 4096]"), std::string::npos) << msg;
  }
}

TEST(Api, ScoreEqualsLogSoftmaxOfStep) {
  auto model = load(fixture_model("neox-hd40"));
  const std::vector<int32_t> tokens = {4, 8, 15, 16, 23, 42, 7, 9};
  auto a = session(model.get());
  std::vector<float> nll(tokens.size() - 1);
  ASSERT_EQ(kvc_session_score(a.get(), tokens.data(), tokens.size(), nullptr, nll.data(),
                              nll.size()),
            KVC_OK);
  auto b = session(model.get());
  const size_t vocab = static_cast<size_t>(vocab_of(model.get()));
  std::vector<float> logits(vocab);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    ASSERT_EQ(kvc_session_step(b.get(), &tokens[i], 1, KVC_LOGITS_LAST, logits.data(), vocab),
              KVC_OK);
    double mx = logits[0], sum = 0;
    for (float l : logits) mx = std::max<double>(mx, l);
    for (float l : logits) sum += std::exp(l - mx);
    EXPECT_NEAR(nll[i], std::log(sum) + mx - logits[tokens[i + 1]], 1e-5);
  }
  // Prefill scoring of the same text agrees within fp32 rounding.
  auto c = session(model.get());
  kvc_score_options so;
  kvc_score_options_init(&so);
  so.mode = KVC_SCORE_PREFILL;
  std::vector<float> nll2(tokens.size() - 1);
  ASSERT_EQ(kvc_session_score(c.get(), tokens.data(), tokens.size(), &so, nll2.data(),
                              nll2.size()),
            KVC_OK);
  for (size_t i = 0; i < nll.size(); ++i) EXPECT_NEAR(nll[i], nll2[i], 1e-4);
  // After reset the session reproduces its first result exactly.
  ASSERT_EQ(kvc_session_reset(a.get()), KVC_OK);
  std::vector<float> nll3(tokens.size() - 1);
  ASSERT_EQ(kvc_session_score(a.get(), tokens.data(), tokens.size(), nullptr, nll3.data(),
                              nll3.size()),
            KVC_OK);
  EXPECT_EQ(nll, nll3);
}

TEST(Api, MaxEntriesIsEnforcedBeforeAppending) {
  auto model = load(fixture_model("neox-par-r25"));
  kvc_session_options o;
  kvc_session_options_init(&o);
  o.max_entries = 4;
  kvc_session* s = nullptr;
  ASSERT_EQ(kvc_session_create(model.get(), &o, &s), KVC_OK);
  SessionPtr guard(s);
  const std::array<int32_t, 5> tokens = {1, 2, 3, 4, 5};
  EXPECT_EQ(kvc_session_step(s, tokens.data(), 5, KVC_LOGITS_NONE, nullptr, 0),
            KVC_ERR_OUT_OF_RANGE);
  EXPECT_EQ(kvc_session_step(s, tokens.data(), 4, KVC_LOGITS_NONE, nullptr, 0), KVC_OK);
}

TEST(Api, SyntheticModelsHaveExactPythiaShapes) {
  kvc_model_options o;
  kvc_model_options_init(&o);
  o.weight_dtype = KVC_DTYPE_BF16;
  kvc_model* m = nullptr;
  ASSERT_EQ(kvc_model_load("synthetic:pythia-160m", &o, &m), KVC_OK) << kvc_last_error();
  ModelPtr guard(m);
  kvc_model_info info;
  kvc_model_info_init(&info);
  ASSERT_EQ(kvc_model_get_info(m, &info), KVC_OK);
  EXPECT_EQ(info.n_layers, 12);
  EXPECT_EQ(info.hidden_size, 768);
  EXPECT_EQ(info.n_heads, 12);
  EXPECT_EQ(info.vocab_size, 50304);
  EXPECT_EQ(info.rotary_ndims, 16);
  EXPECT_EQ(info.weight_dtype, KVC_DTYPE_BF16);
  EXPECT_EQ(kvc_model_tokenizer(m), nullptr);
  EXPECT_EQ(kvc_model_load("synthetic:pythia-5b", &o, &m), KVC_ERR_NOT_FOUND);
  EXPECT_NE(std::string(kvc_last_error()).find("pythia-2.8b"), std::string::npos);
}

// Only kvc_* symbols may be exported from libkvc.so (visibility + version script).
TEST(Api, LibraryExportsOnlyKvcSymbols) {
  const std::string cmd = "nm -D --defined-only " + std::string(KVC_LIBKVC_PATH) + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[1024];
  int exported = 0;
  std::string offenders;
  while (fgets(line, sizeof line, p)) {
    std::string s(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    const size_t sp = s.rfind(' ');
    const std::string name = sp == std::string::npos ? s : s.substr(sp + 1);
    if (name.empty() || name == "KVC_1") continue;
    if (name.rfind("kvc_", 0) == 0) {
      ++exported;
      continue;
    }
    offenders += name + " ";
  }
  EXPECT_EQ(pclose(p), 0);
  EXPECT_GT(exported, 20);
  EXPECT_EQ(offenders, "") << "unexpected exports";
}

}  // namespace
}  // namespace kvc::testing
