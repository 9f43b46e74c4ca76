// Retrieval tasks (hosts/eval/tasks.h): the generators are deterministic and lay out what they
// say (checked with a one-byte-per-token tokenizer, so prompts read back as text), the scorers
// count right answers right and wrong ones wrong on hand-made cases, and the runs work on the
// embedded model.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kvc/kvc.h"
#include "tasks.h"

namespace kvc::hosts::tasks {
namespace {

// One id per byte: prompts decode back to their text exactly.
std::vector<int32_t> bytes(const std::string& text) {
  return std::vector<int32_t>(text.begin(), text.end());
}
const Tokenize kBytes = bytes;

std::string text(const std::vector<int32_t>& ids) { return std::string(ids.begin(), ids.end()); }

TEST(Tasks, SplitMix64AndSeedsAreStable) {
  EXPECT_EQ(splitmix64(1234567, 0), 6457827717110365317ull);
  EXPECT_EQ(splitmix64(1234567, 1), 3203168211198807973ull);
  EXPECT_EQ(derive_seed(5, {1, 2}), derive_seed(5, {1, 2}));
  EXPECT_NE(derive_seed(5, {1, 2}), derive_seed(5, {2, 1}));
  EXPECT_NE(derive_seed(5, {1, 2}), derive_seed(6, {1, 2}));
}

TEST(Tasks, PasskeyIsDeterministicAndLaidOutAsAsked) {
  const Filler f = repeat_filler(kBytes);
  const Instance a = make_passkey(kBytes, f, 1000, 0.5, 42);
  const Instance b = make_passkey(kBytes, f, 1000, 0.5, 42);
  EXPECT_EQ(a.prompt, b.prompt);
  EXPECT_EQ(a.answer, b.answer);
  const Instance c = make_passkey(kBytes, f, 1000, 0.5, 43);
  EXPECT_NE(a.expected, c.expected);

  ASSERT_EQ(a.expected.size(), 1u);
  const std::string key = a.expected[0];
  EXPECT_EQ(key.size(), 5u);
  EXPECT_EQ(text(a.answer), " " + key);
  const std::string p = text(a.prompt);
  EXPECT_LE(a.prompt.size(), 1000u);
  EXPECT_GT(a.prompt.size(), 1000u - 25);  // short by less than one filler sentence
  EXPECT_EQ(p.rfind("There is an important info hidden", 0), 0u);
  const std::string needle = " The pass key is " + key + ". Remember it. " + key + " is the pass key.";
  ASSERT_EQ(a.needle_positions.size(), 1u);
  EXPECT_EQ(p.substr(static_cast<size_t>(a.needle_positions[0]), needle.size()), needle);
  EXPECT_EQ(p.size() - p.rfind(" What is the pass key? The pass key is"),
            std::string(" What is the pass key? The pass key is").size());
  EXPECT_NE(p.find(" The grass is green. The sky is blue. The sun is yellow. Here we go. There "
                   "and back again. The grass is green."),
            std::string::npos);
  EXPECT_NEAR(a.actual_depth, 0.5, 0.03);

  // Depth 0: right after the instruction; depth 1: right before the question.
  const Instance d0 = make_passkey(kBytes, f, 600, 0.0, 1);
  EXPECT_EQ(text(d0.prompt).substr(static_cast<size_t>(d0.needle_positions[0]), 17),
            " The pass key is ");
  EXPECT_EQ(text(d0.prompt)[static_cast<size_t>(d0.needle_positions[0]) - 1], '.');
  EXPECT_EQ(d0.actual_depth, 0.0);
  const Instance d1 = make_passkey(kBytes, f, 600, 1.0, 1);
  const std::string p1 = text(d1.prompt);
  const std::string n1 = " The pass key is " + d1.expected[0] + ". Remember it. " +
                         d1.expected[0] + " is the pass key.";
  EXPECT_EQ(p1.find(" What is the pass key?"),
            static_cast<size_t>(d1.needle_positions[0]) + n1.size());
  EXPECT_EQ(d1.actual_depth, 1.0);
  // Too short for the fixed parts, or a depth outside [0, 1]: errors.
  EXPECT_THROW(make_passkey(kBytes, f, 100, 0.5, 1), std::invalid_argument);
  EXPECT_THROW(make_passkey(kBytes, f, 1000, 1.5, 1), std::invalid_argument);
}

TEST(Tasks, NeedleVariants) {
  const Filler f = repeat_filler(kBytes);
  NeedleOptions single;
  const Instance s = make_needle(kBytes, f, single, 1500, 0.25, 7);
  EXPECT_EQ(s.task, "needle_single");
  EXPECT_EQ(s.prompt, make_needle(kBytes, f, single, 1500, 0.25, 7).prompt);
  ASSERT_EQ(s.expected.size(), 1u);
  EXPECT_EQ(s.expected[0].size(), 7u);
  const std::string p = text(s.prompt);
  EXPECT_EQ(p.find(" One of the special magic numbers for " + s.query + " is: " + s.expected[0] +
                   "."),
            static_cast<size_t>(s.needle_positions[0]));
  EXPECT_NE(p.find("What is the special magic number for " + s.query +
                   " mentioned in the provided text? The special magic number for " + s.query +
                   " mentioned in the provided text is"),
            std::string::npos);
  EXPECT_NEAR(s.actual_depth, 0.25, 0.03);

  NeedleOptions mk;
  mk.variant = "multikey";
  mk.num_keys = 4;
  const Instance k = make_needle(kBytes, f, mk, 1500, 0.75, 7);
  const std::string pk = text(k.prompt);
  ASSERT_EQ(k.needle_positions.size(), 4u);
  std::set<std::string> keys;
  size_t pos = 0;
  while ((pos = pk.find("magic numbers for ", pos)) != std::string::npos) {
    pos += 18;
    const size_t end = pk.find(' ', pos);
    keys.insert(pk.substr(pos, end - pos));
  }
  EXPECT_EQ(keys.size(), 4u);  // the needles' keys, all distinct
  EXPECT_TRUE(keys.count(k.query));
  EXPECT_EQ(k.expected.size(), 1u);
  EXPECT_EQ(pk.find(" One of the special magic numbers for " + k.query + " is: " + k.expected[0]),
            static_cast<size_t>(k.needle_positions[0]));
  EXPECT_NEAR(k.actual_depth, 0.75, 0.03);

  NeedleOptions mv;
  mv.variant = "multivalue";
  mv.num_values = 3;
  const Instance v = make_needle(kBytes, f, mv, 1500, 0.5, 9);
  EXPECT_EQ(v.expected.size(), 3u);
  std::string joined;
  for (const auto& e : v.expected) {
    EXPECT_NE(text(v.prompt).find(v.query + " is: " + e + "."), std::string::npos);
    joined += (joined.empty() ? " " : ", ") + e;
  }
  EXPECT_EQ(text(v.answer), joined);
  // The expected values are in the order the text gives them.
  std::vector<size_t> at;
  for (const auto& e : v.expected) at.push_back(text(v.prompt).find(e));
  EXPECT_TRUE(std::is_sorted(at.begin(), at.end()));
  NeedleOptions bad;
  bad.variant = "multi";
  EXPECT_THROW(make_needle(kBytes, f, bad, 1500, 0.5, 1), std::invalid_argument);
}

TEST(Tasks, TextFillerStartsAtASeededLineAndKeepsLines) {
  std::string corpus;
  for (int i = 0; i < 200; ++i) corpus += "Verse number " + std::to_string(i) + " of the book.\n\n";
  const Filler f = text_filler(kBytes, corpus, "kjv");
  EXPECT_EQ(f.units.size(), 200u);  // blank lines dropped
  EXPECT_TRUE(f.lines);
  const Instance a = make_passkey(kBytes, f, 800, 0.5, 1);
  const Instance b = make_passkey(kBytes, f, 800, 0.5, 2);
  EXPECT_EQ(a.prompt, make_passkey(kBytes, f, 800, 0.5, 1).prompt);
  const std::string pa = text(a.prompt);
  EXPECT_NE(pa.substr(0, 300), text(b.prompt).substr(0, 300));
  // The needle is a line of its own, and the question follows a line break.
  const size_t at = static_cast<size_t>(a.needle_positions[0]);
  EXPECT_EQ(pa[at - 1], '\n');
  EXPECT_EQ(pa.substr(at, 16), "The pass key is ");
  EXPECT_EQ(pa.substr(pa.rfind('\n') + 1), "What is the pass key? The pass key is");
}

TEST(Tasks, CopyLaysOutSpanGapSpan) {
  const Filler f = repeat_filler(kBytes);
  std::vector<int32_t> pool;
  for (int32_t id = 1000; id < 1100; ++id) pool.push_back(id);
  const Instance c = make_copy(kBytes, f, pool, 16, 40, 3);
  EXPECT_EQ(c.prompt, make_copy(kBytes, f, pool, 16, 40, 3).prompt);
  EXPECT_NE(c.answer, make_copy(kBytes, f, pool, 16, 40, 4).answer);
  const std::vector<int32_t> marker = bytes("\n>>");
  ASSERT_EQ(c.prompt.size(), 2 * marker.size() + 16 + 40);
  EXPECT_EQ(std::vector<int32_t>(c.prompt.begin(), c.prompt.begin() + 3), marker);
  EXPECT_EQ(std::vector<int32_t>(c.prompt.begin() + 3, c.prompt.begin() + 19), c.answer);
  EXPECT_EQ(text(std::vector<int32_t>(c.prompt.begin() + 19, c.prompt.begin() + 59)),
            std::string(" The grass is green. The sky is blue. Th"));
  EXPECT_EQ(std::vector<int32_t>(c.prompt.end() - 3, c.prompt.end()), marker);
  EXPECT_EQ(std::set<int32_t>(c.answer.begin(), c.answer.end()).size(), 16u);  // distinct
  for (int32_t id : c.answer) EXPECT_TRUE(id >= 1000 && id < 1100);
  EXPECT_THROW(make_copy(kBytes, f, {}, 16, 40, 3), std::invalid_argument);
  EXPECT_THROW(make_copy(kBytes, f, pool, 0, 40, 3), std::invalid_argument);
}

TEST(Tasks, PasskeyScorer) {
  Instance in;
  in.expected = {"68220"};
  EXPECT_TRUE(score_passkey(in, " 68220").correct);
  EXPECT_TRUE(score_passkey(in, " 68220. Remember").correct);
  EXPECT_TRUE(score_passkey(in, "The pass key is 68220").correct);
  EXPECT_EQ(score_passkey(in, " 68220").score, 1.0);
  EXPECT_FALSE(score_passkey(in, " 6822").correct);
  EXPECT_FALSE(score_passkey(in, " 682201").correct);
  EXPECT_FALSE(score_passkey(in, " 68221").correct);
  EXPECT_FALSE(score_passkey(in, " 12 68220").correct);  // the first number counts
  EXPECT_FALSE(score_passkey(in, "").correct);
  EXPECT_FALSE(score_passkey(in, " the grass").correct);
  EXPECT_EQ(score_passkey(in, " 68221").score, 0.0);
  EXPECT_EQ(score_passkey(in, " 12 68220").parsed, "12");
}

TEST(Tasks, NeedleScorer) {
  Instance one;
  one.expected = {"1234567"};
  EXPECT_TRUE(score_needle(one, " 1234567.").correct);
  EXPECT_EQ(score_needle(one, " 1234567.").score, 1.0);
  EXPECT_FALSE(score_needle(one, " 1234568.").correct);
  EXPECT_EQ(score_needle(one, " 123456").score, 0.0);
  Instance many;
  many.expected = {"1111111", "2222222", "3333333", "4444444"};
  EXPECT_EQ(score_needle(many, " 2222222, 4444444").score, 0.5);
  EXPECT_FALSE(score_needle(many, " 2222222, 4444444").correct);
  EXPECT_TRUE(score_needle(many, "4444444 3333333 2222222 1111111").correct);
  EXPECT_EQ(score_needle(many, "").score, 0.0);
}

TEST(Tasks, CopyScorer) {
  Instance in;
  in.answer = {5, 6, 7, 8};
  CopyScore s = score_copy(in, {0.5f, 1.5f, 0.25f, 0.75f}, {5, 6, 7, 8});
  EXPECT_DOUBLE_EQ(s.mean_nll, 0.75);
  EXPECT_DOUBLE_EQ(s.token_accuracy, 1.0);
  EXPECT_TRUE(s.exact_match);
  s = score_copy(in, {0.5f, 1.5f, 0.25f, 0.75f}, {5, 6, 9, 8});
  EXPECT_DOUBLE_EQ(s.token_accuracy, 0.75);
  EXPECT_FALSE(s.exact_match);
  EXPECT_THROW(score_copy(in, {0.5f}, {5}), std::invalid_argument);
}

// ---- runs on the embedded model --------------------------------------------------------------

struct ModelFree {
  void operator()(kvc_model* m) const { kvc_model_free(m); }
};
struct SessionFree {
  void operator()(kvc_session* s) const { kvc_session_free(s); }
};

class TaskRuns : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = std::string(KVC_SOURCE_DIR) + "/models/kjv-mini";
    if (!std::filesystem::exists(path + "/config.json")) GTEST_SKIP() << "no " << path;
    kvc_model_options o;
    kvc_model_options_init(&o);
    o.backend = KVC_BACKEND_CPU;
    o.n_threads = 1;
    kvc_model* m = nullptr;
    ASSERT_EQ(kvc_model_load(path.c_str(), &o, &m), KVC_OK) << kvc_last_error();
    model_.reset(m);
    tokenize_ = tokenizer_function(kvc_model_tokenizer(m));
  }
  std::unique_ptr<kvc_session, SessionFree> session(const char* policy = nullptr,
                                                    std::vector<kvc_param> params = {}) {
    kvc_session_options o;
    kvc_session_options_init(&o);
    o.policy = policy;
    if (policy) o.policy_path = KVC_BUILD_POLICY_DIR;
    o.params = params.empty() ? nullptr : params.data();
    o.n_params = params.size();
    kvc_session* s = nullptr;
    EXPECT_EQ(kvc_session_create(model_.get(), &o, &s), KVC_OK) << kvc_last_error();
    return std::unique_ptr<kvc_session, SessionFree>(s);
  }
  std::unique_ptr<kvc_model, ModelFree> model_;
  Tokenize tokenize_;
};

TEST_F(TaskRuns, GreedyAnswerIsTheGenerationAfterTheStreamedPrompt) {
  const Filler f = repeat_filler(tokenize_);
  const Instance in = make_passkey(tokenize_, f, 256, 0.5, 11);
  EXPECT_LE(in.prompt.size(), 256u);
  auto s = session();
  const std::string answer = answer_greedy(s.get(), in);
  // The same as generating after a batched prefill with the full cache (nothing is evicted).
  auto ref = session();
  std::string text;
  kvc_generate_options o;
  kvc_generate_options_init(&o);
  o.max_tokens = in.max_new_tokens;
  o.on_token = [](void* u, int32_t, const char* piece, size_t len) -> int32_t {
    static_cast<std::string*>(u)->append(piece, len);
    return 0;
  };
  o.user_data = &text;
  ASSERT_EQ(kvc_generate(ref.get(), nullptr, in.prompt.data(), in.prompt.size(), &o, nullptr, 0,
                         nullptr), KVC_OK) << kvc_last_error();
  EXPECT_EQ(answer, text);
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  ASSERT_EQ(kvc_session_cache_stats(s.get(), &st), KVC_OK);
  EXPECT_EQ(st.n_tokens_seen, static_cast<int64_t>(in.prompt.size()) + in.max_new_tokens - 1);
}

TEST_F(TaskRuns, CopyRunScoresTheSecondCopy) {
  const Filler f = repeat_filler(tokenize_);
  const std::vector<int32_t> pool = word_pool(kvc_model_tokenizer(model_.get()));
  ASSERT_GT(pool.size(), 100u);
  const Instance in = make_copy(tokenize_, f, pool, 16, 32, 5);
  auto dense = session();
  const CopyScore d = run_copy(model_.get(), dense.get(), in);
  // Against kvc_session_score over the whole text: the same NLLs for the answer.
  std::vector<int32_t> all = in.prompt;
  all.insert(all.end(), in.answer.begin(), in.answer.end());
  std::vector<float> nll(all.size() - 1);
  auto ref = session();
  ASSERT_EQ(kvc_session_score(ref.get(), all.data(), all.size(), nullptr, nll.data(), nll.size()),
            KVC_OK);
  double sum = 0;
  for (size_t i = in.prompt.size() - 1; i < nll.size(); ++i) sum += nll[i];
  EXPECT_NEAR(d.mean_nll, sum / static_cast<double>(in.answer.size()), 1e-4);
  // The argmax predictions against the logits of kvc_session_step, token by token.
  auto steps = session();
  kvc_model_info info;
  kvc_model_info_init(&info);
  ASSERT_EQ(kvc_model_get_info(model_.get(), &info), KVC_OK);
  const int32_t n_vocab = kvc_tokenizer_vocab_size(kvc_model_tokenizer(model_.get()));
  std::vector<float> logits(static_cast<size_t>(info.vocab_size));
  size_t right = 0;
  for (size_t i = 0; i + 1 < all.size(); ++i) {
    ASSERT_EQ(kvc_session_step(steps.get(), &all[i], 1, KVC_LOGITS_LAST, logits.data(),
                               logits.size()), KVC_OK);
    if (i + 1 < in.prompt.size()) continue;
    const auto best = std::max_element(logits.begin(), logits.begin() + n_vocab) - logits.begin();
    right += best == all[i + 1] ? 1 : 0;
  }
  EXPECT_DOUBLE_EQ(d.token_accuracy, static_cast<double>(right) / in.answer.size());
  EXPECT_EQ(d.exact_match, right == in.answer.size());
}

}  // namespace
}  // namespace kvc::hosts::tasks
