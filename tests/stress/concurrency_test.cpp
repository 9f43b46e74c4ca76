// Concurrency: one kvc_model shared by sessions on several threads gives exactly the results
// of serial runs (the model is immutable; each session owns its cache, scratch and workers).
// Sessions are also created concurrently, so the process-wide policy cache and the shared
// tokenizer are exercised from several threads. Built and run under ThreadSanitizer by
// scripts/ci_sanitizers.sh (preset tsan), where any data race fails the test.
#include <atomic>
#include <thread>

#include "stress_util.h"

namespace kvc::stress {
namespace {

TEST(Concurrency, SessionsOnOneModelMatchSerialRuns) {
  ModelPtr model = load_model(2);
  ASSERT_TRUE(model);
  const std::vector<int32_t> tokens = text_tokens(model.get(), 160);
  const auto& all = configs();

  std::vector<std::vector<float>> serial;
  for (const Config& c : all) {
    SessionPtr s = make_session(model.get(), c);
    ASSERT_TRUE(s);
    serial.push_back(score(s.get(), tokens));
  }

  // Every configuration twice, each run on its own thread, all at once.
  const size_t n_runs = 2 * all.size();
  std::vector<std::vector<float>> parallel(n_runs);
  std::vector<std::string> errors(n_runs);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (size_t r = 0; r < n_runs; ++r) {
    threads.emplace_back([&, r] {
      const Config& c = all[r % all.size()];
      ready.fetch_add(1);
      while (ready.load() < static_cast<int>(n_runs)) std::this_thread::yield();
      kvc_session_options o;
      kvc_session_options_init(&o);
      o.policy = c.policy;
      o.params = c.params.data();
      o.n_params = c.params.size();
      o.positions = c.positions;
      o.policy_path = KVC_BUILD_POLICY_DIR;
      kvc_session* s = nullptr;
      if (kvc_session_create(model.get(), &o, &s) != KVC_OK) {
        errors[r] = std::string("create: ") + kvc_last_error();
        return;
      }
      std::vector<float> nll(tokens.size() - 1);
      kvc_score_options so;
      kvc_score_options_init(&so);
      if (kvc_session_score(s, tokens.data(), tokens.size(), &so, nll.data(), nll.size()) !=
          KVC_OK)
        errors[r] = std::string("score: ") + kvc_last_error();
      kvc_session_free(s);
      parallel[r] = std::move(nll);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t r = 0; r < n_runs; ++r) {
    SCOPED_TRACE(all[r % all.size()].name);
    ASSERT_TRUE(errors[r].empty()) << errors[r];
    EXPECT_TRUE(bit_identical(parallel[r], serial[r % all.size()]))
        << "max |diff| " << max_abs_diff(parallel[r], serial[r % all.size()]);
  }
}

TEST(Concurrency, SharedTokenizerFromManyThreads) {
  ModelPtr model = load_model(1);
  ASSERT_TRUE(model);
  const kvc_tokenizer* tok = kvc_model_tokenizer(model.get());
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> texts = {
      "In the beginning God created the heaven and the earth.",
      "caf\xc3\xa9 cafe\xcc\x81 <|endoftext|> 12345 \xff\xfe invalid",
      "And God said, Let there be light: and there was light.\n\n",
  };
  auto encode = [&](const std::string& t) {
    std::vector<int32_t> ids(t.size() + 8);
    size_t n = 0;
    EXPECT_EQ(kvc_tokenize(tok, t.data(), t.size(), ids.data(), ids.size(), &n), KVC_OK);
    ids.resize(n);
    return ids;
  };
  std::vector<std::vector<int32_t>> expected;
  for (const auto& t : texts) expected.push_back(encode(t));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int i = 0; i < 50; ++i) {
        const size_t j = static_cast<size_t>(i + k) % texts.size();
        if (encode(texts[j]) != expected[j]) mismatches.fetch_add(1);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace kvc::stress
