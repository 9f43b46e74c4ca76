// Generation: the text stream's stop sequences and UTF-8 hold-back on hand-made token bytes,
// then kvc_generate on the embedded model (greedy = the argmax loop over kvc_session_step, a
// seed repeats across runs and thread counts, stop sequences spanning token boundaries, the
// callback, stop tokens, continuation, and errors).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/generate.h"
#include "kvc/kvc.h"
#include "tokenizer/tokenizer.h"

namespace kvc {
namespace {

// ---- TextStream ------------------------------------------------------------------------------

struct Streamed {
  std::vector<std::string> pieces;
  std::string text;
  int32_t stop = -1;
  size_t stop_piece = 0;  // index of the push that found the stop
};

Streamed stream(const std::vector<std::string>& stops, const std::vector<std::string>& tokens,
                bool flush = true) {
  TextStream ts(stops);
  Streamed s;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto out = ts.push(tokens[i]);
    s.pieces.push_back(out.text);
    s.text += out.text;
    if (out.stop >= 0) {
      s.stop = out.stop;
      s.stop_piece = i;
      break;
    }
  }
  if (flush) s.text += ts.flush();
  return s;
}

TEST(TextStream, StopSequenceSpanningTokensStopsBeforeIt) {
  auto s = stream({"\n\n"}, {"Amen.", "\n", "\nAnd", " it"});
  EXPECT_EQ(s.stop, 0);
  EXPECT_EQ(s.stop_piece, 2u);
  EXPECT_EQ(s.text, "Amen.");
  EXPECT_EQ(s.pieces, (std::vector<std::string>{"Amen.", "", ""}));

  s = stream({"STOP"}, {"ab", "cST", "O", "Pxyz"});
  EXPECT_EQ(s.stop, 0);
  EXPECT_EQ(s.stop_piece, 3u);
  EXPECT_EQ(s.pieces, (std::vector<std::string>{"ab", "c", "", ""}));
  EXPECT_EQ(s.text, "abc");
}

TEST(TextStream, HeldTextIsReleasedWhenItCannotBeAStop) {
  auto s = stream({"END"}, {"The E", "Nd", " of"});
  EXPECT_EQ(s.stop, -1);
  EXPECT_EQ(s.pieces, (std::vector<std::string>{"The ", "ENd", " of"}));
  EXPECT_EQ(s.text, "The ENd of");
  // A held prefix at the end of the generation is released by flush.
  s = stream({"END"}, {"The E", "N"});
  EXPECT_EQ(s.pieces, (std::vector<std::string>{"The ", ""}));
  EXPECT_EQ(s.text, "The EN");
  // The held part starts at the earliest possible start: "aab" with stop "aab" over "a","a","b".
  s = stream({"aab"}, {"a", "a", "ac", "aab"});
  EXPECT_EQ(s.stop, 0);
  EXPECT_EQ(s.text, "aaac");
}

TEST(TextStream, EarliestStartingStopWinsThenTheFirstListed) {
  auto s = stream({"xyz", "b"}, {"abxyz"});
  EXPECT_EQ(s.stop, 1);
  EXPECT_EQ(s.text, "a");
  s = stream({"bc", "b"}, {"abc"});
  EXPECT_EQ(s.stop, 0);
  EXPECT_EQ(s.text, "a");
  s = stream({"b", "bc"}, {"a", "b", "c"});
  EXPECT_EQ(s.stop, 0);
  EXPECT_EQ(s.text, "a");
}

TEST(TextStream, IncompleteUtf8IsHeldAndInvalidBytesReplacedAsForTheWholeText) {
  // "é" = C3 A9 split across two tokens.
  auto s = stream({}, {"caf\xC3", "\xA9!"});
  EXPECT_EQ(s.pieces, (std::vector<std::string>{"caf", "\xC3\xA9!"}));
  // A lead byte followed by ASCII: invalid, one U+FFFD (as Python's errors="replace").
  s = stream({}, {"a\xC3", "b"});
  EXPECT_EQ(s.text, "a\xEF\xBF\xBD" "b");
  // A 4-byte character over three tokens, and a truncated one at the end (flushed).
  s = stream({}, {"\xF0\x9F", "\x98", "\x80 ", "\xE2\x82"});
  EXPECT_EQ(s.pieces, (std::vector<std::string>{"", "", "\xF0\x9F\x98\x80 ", ""}));
  EXPECT_EQ(s.text, "\xF0\x9F\x98\x80 \xEF\xBF\xBD");
  EXPECT_EQ(s.text, utf8::replace_invalid("\xF0\x9F\x98\x80 \xE2\x82"));
  // Bytes that can never start a character are released at once.
  EXPECT_EQ(TextStream::incomplete_tail("ab\xC0"), 3u);
  EXPECT_EQ(TextStream::incomplete_tail("ab\xE0\x80"), 4u);  // E0 80: already invalid
  EXPECT_EQ(TextStream::incomplete_tail("ab\xE0\xA0"), 2u);
  EXPECT_EQ(TextStream::incomplete_tail("ab\xED\xA0"), 4u);  // a surrogate: invalid
  EXPECT_EQ(TextStream::incomplete_tail("ab\xF4\x90"), 4u);  // above U+10FFFF
  EXPECT_EQ(TextStream::incomplete_tail(""), 0u);
  // A stop sequence with a non-ASCII character, spanning the character's bytes.
  s = stream({"é."}, {"caf\xC3", "\xA9", ". x"});
  EXPECT_EQ(s.stop, 0);
  EXPECT_EQ(s.text, "caf");
}

TEST(TextStream, PiecesConcatenateToTheDecodedTextWithoutStops) {
  const std::vector<std::string> tokens = {"In", " the", " begin", "ning", "\xE2", "\x80\x94",
                                           "\xFF", "God"};
  auto s = stream({}, tokens);
  std::string whole;
  for (const auto& t : tokens) whole += t;
  EXPECT_EQ(s.text, utf8::replace_invalid(whole));
}

// ---- kvc_generate on the embedded model ----------------------------------------------------

const std::string kModel = std::string(KVC_SOURCE_DIR) + "/models/kjv-mini";

struct ModelFree {
  void operator()(kvc_model* m) const { kvc_model_free(m); }
};
struct SessionFree {
  void operator()(kvc_session* s) const { kvc_session_free(s); }
};
struct SamplerFree {
  void operator()(kvc_sampler* s) const { kvc_sampler_free(s); }
};
using ModelPtr = std::unique_ptr<kvc_model, ModelFree>;
using SessionPtr = std::unique_ptr<kvc_session, SessionFree>;
using SamplerPtr = std::unique_ptr<kvc_sampler, SamplerFree>;

ModelPtr load(int threads) {
  kvc_model_options o;
  kvc_model_options_init(&o);
  o.backend = KVC_BACKEND_CPU;
  o.n_threads = threads;
  kvc_model* m = nullptr;
  EXPECT_EQ(kvc_model_load(kModel.c_str(), &o, &m), KVC_OK) << kvc_last_error();
  return ModelPtr(m);
}

SessionPtr session(kvc_model* model, const char* policy = nullptr,
                   std::vector<kvc_param> params = {}) {
  kvc_session_options o;
  kvc_session_options_init(&o);
  o.policy = policy;
  if (policy != nullptr) o.policy_path = KVC_BUILD_POLICY_DIR;
  o.params = params.empty() ? nullptr : params.data();
  o.n_params = params.size();
  kvc_session* s = nullptr;
  EXPECT_EQ(kvc_session_create(model, &o, &s), KVC_OK) << kvc_last_error();
  return SessionPtr(s);
}

SamplerPtr sampler(float temperature, uint64_t seed, int32_t top_k = 0, float top_p = 1) {
  kvc_sampler_options o;
  kvc_sampler_options_init(&o);
  o.temperature = temperature;
  o.seed = seed;
  o.top_k = top_k;
  o.top_p = top_p;
  kvc_sampler* s = nullptr;
  EXPECT_EQ(kvc_sampler_create(&o, &s), KVC_OK) << kvc_last_error();
  return SamplerPtr(s);
}

std::vector<int32_t> tokenize(kvc_model* model, const std::string& text) {
  const kvc_tokenizer* tok = kvc_model_tokenizer(model);
  std::vector<int32_t> ids(text.size() + 8);
  size_t n = 0;
  EXPECT_EQ(kvc_tokenize(tok, text.data(), text.size(), ids.data(), ids.size(), &n), KVC_OK);
  ids.resize(n);
  return ids;
}

struct GenRun {
  std::vector<int32_t> tokens;  // from the callback
  std::vector<std::string> pieces;
  std::string text;
  kvc_generate_result result{};
  kvc_status status = KVC_OK;
  int stop_after = -1;  // the callback returns 1 at this token
};

int32_t collect(void* user, int32_t token, const char* piece, size_t len) {
  auto* r = static_cast<GenRun*>(user);
  r->tokens.push_back(token);
  r->pieces.emplace_back(piece, len);
  r->text.append(piece, len);
  EXPECT_EQ(piece[len], '\0');
  return static_cast<int>(r->tokens.size()) == r->stop_after ? 1 : 0;
}

GenRun generate(kvc_session* s, kvc_sampler* sm, const std::vector<int32_t>& prompt, int32_t max,
             std::vector<std::string> stops = {}, std::vector<int32_t> stop_tokens = {},
             int stop_after = -1) {
  GenRun r;
  r.stop_after = stop_after;
  std::vector<const char*> stop_ptrs;
  for (const auto& x : stops) stop_ptrs.push_back(x.c_str());
  kvc_generate_options o;
  kvc_generate_options_init(&o);
  o.max_tokens = max;
  o.stop = stop_ptrs.empty() ? nullptr : stop_ptrs.data();
  o.n_stop = stop_ptrs.size();
  o.stop_tokens = stop_tokens.empty() ? nullptr : stop_tokens.data();
  o.n_stop_tokens = stop_tokens.size();
  o.on_token = collect;
  o.user_data = &r;
  kvc_generate_result_init(&r.result);
  std::vector<int32_t> out(static_cast<size_t>(std::max(max, 0)));
  r.status = kvc_generate(s, sm, prompt.data(), prompt.size(), &o, out.data(), out.size(),
                          &r.result);
  if (r.status == KVC_OK) {
    out.resize(static_cast<size_t>(r.result.n_tokens));
    EXPECT_EQ(out, r.tokens);
    EXPECT_EQ(r.result.text_len, r.text.size());
  }
  return r;
}

class Generate : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel + "/config.json")) GTEST_SKIP() << "no " << kModel;
    model_ = load(2);
    prompt_ = tokenize(model_.get(), "And God said, Let there be light: and there was");
  }
  int32_t tokenizer_vocab() const {
    return kvc_tokenizer_vocab_size(kvc_model_tokenizer(model_.get()));
  }
  ModelPtr model_;
  std::vector<int32_t> prompt_;
};

TEST_F(Generate, GreedyEqualsTheArgmaxLoop) {
  auto s = session(model_.get());
  const GenRun r = generate(s.get(), nullptr, prompt_, 24);
  ASSERT_EQ(r.status, KVC_OK) << kvc_last_error();
  EXPECT_EQ(r.result.n_tokens, 24);
  EXPECT_EQ(r.result.stop_reason, KVC_STOP_MAX_TOKENS);
  EXPECT_EQ(r.result.stop_index, -1);

  kvc_model_info info;
  kvc_model_info_init(&info);
  ASSERT_EQ(kvc_model_get_info(model_.get(), &info), KVC_OK);
  auto ref = session(model_.get());
  std::vector<float> logits(static_cast<size_t>(info.vocab_size));
  ASSERT_EQ(kvc_session_step(ref.get(), prompt_.data(), prompt_.size(), KVC_LOGITS_LAST,
                             logits.data(), logits.size()), KVC_OK);
  std::vector<int32_t> expected;
  for (int i = 0; i < 24; ++i) {
    const auto end = logits.begin() + tokenizer_vocab();
    const auto next = static_cast<int32_t>(std::max_element(logits.begin(), end) - logits.begin());
    expected.push_back(next);
    ASSERT_EQ(kvc_session_step(ref.get(), &next, 1, KVC_LOGITS_LAST, logits.data(),
                               logits.size()), KVC_OK);
  }
  EXPECT_EQ(r.tokens, expected);
  // The pieces concatenate to the decoded text.
  std::string decoded(4096, '\0');
  size_t len = 0;
  ASSERT_EQ(kvc_detokenize(kvc_model_tokenizer(model_.get()), expected.data(), expected.size(),
                           decoded.data(), decoded.size(), &len), KVC_OK);
  decoded.resize(len);
  EXPECT_EQ(r.text, decoded);
  // Every generated token but the last was fed.
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  ASSERT_EQ(kvc_session_cache_stats(s.get(), &st), KVC_OK);
  EXPECT_EQ(st.n_tokens_seen, static_cast<int64_t>(prompt_.size()) + 23);
  // A greedy sampler object gives the same tokens as NULL.
  auto g = sampler(0, 99);
  auto s2 = session(model_.get());
  EXPECT_EQ(generate(s2.get(), g.get(), prompt_, 24).tokens, expected);
}

TEST_F(Generate, ContinuingWithTheLastTokenEqualsOneLongerRun) {
  auto a = session(model_.get());
  const GenRun whole = generate(a.get(), nullptr, prompt_, 20);
  auto b = session(model_.get());
  const GenRun first = generate(b.get(), nullptr, prompt_, 10);
  const GenRun second = generate(b.get(), nullptr, {first.tokens.back()}, 10);
  std::vector<int32_t> joined = first.tokens;
  joined.insert(joined.end(), second.tokens.begin(), second.tokens.end());
  EXPECT_EQ(joined, whole.tokens);
}

TEST_F(Generate, FixedSeedGivesTheSameTokensOnEveryRunAndThreadCount) {
  std::vector<std::vector<int32_t>> runs;
  for (int threads : {1, 2, 1, 2}) {
    ModelPtr m = load(threads);
    auto s = session(m.get());
    auto sm = sampler(1.0f, 1234, 0, 0.95f);
    const GenRun r = generate(s.get(), sm.get(), prompt_, 40);
    ASSERT_EQ(r.status, KVC_OK) << kvc_last_error();
    runs.push_back(r.tokens);
  }
  for (size_t i = 1; i < runs.size(); ++i) EXPECT_EQ(runs[i], runs[0]) << "run " << i;
  // Another seed, another text (40 tokens at temperature 1 agreeing by chance: negligible).
  auto s = session(model_.get());
  auto sm = sampler(1.0f, 1235, 0, 0.95f);
  EXPECT_NE(generate(s.get(), sm.get(), prompt_, 40).tokens, runs[0]);
  // The same handle after reset, on a reset session, repeats itself.
  auto s3 = session(model_.get());
  auto sm3 = sampler(1.0f, 1234, 0, 0.95f);
  const GenRun r1 = generate(s3.get(), sm3.get(), prompt_, 40);
  ASSERT_EQ(kvc_session_reset(s3.get()), KVC_OK);
  ASSERT_EQ(kvc_sampler_reset(sm3.get()), KVC_OK);
  EXPECT_EQ(generate(s3.get(), sm3.get(), prompt_, 40).tokens, r1.tokens);
}

TEST_F(Generate, StopSequenceSpanningTokensStopsAtTheRightPlace) {
  auto s = session(model_.get());
  const GenRun free_run = generate(s.get(), nullptr, prompt_, 40);
  ASSERT_EQ(free_run.status, KVC_OK);
  // A stop string made of the last two bytes of one token's text and the first byte of the
  // next one's, where that string does not occur earlier.
  const kvc_tokenizer* tok = kvc_model_tokenizer(model_.get());
  auto text_of = [&](const std::vector<int32_t>& ids) {
    std::string t(4096, '\0');
    size_t len = 0;
    EXPECT_EQ(kvc_detokenize(tok, ids.data(), ids.size(), t.data(), t.size(), &len), KVC_OK);
    t.resize(len);
    return t;
  };
  std::string stop;
  size_t stop_token = 0, before_len = 0;
  for (size_t i = 5; i + 1 < free_run.tokens.size() && stop.empty(); ++i) {
    const std::string a = text_of({free_run.tokens[i]});
    const std::string b = text_of({free_run.tokens[i + 1]});
    if (a.size() < 2 || b.empty()) continue;
    const std::string prefix =
        text_of(std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + i + 1));
    const std::string candidate = a.substr(a.size() - 2) + b.substr(0, 1);
    if ((prefix + b).find(candidate) != prefix.size() - 2) continue;  // an earlier occurrence
    stop = candidate;
    stop_token = i + 1;
    before_len = prefix.size() - 2;
  }
  ASSERT_FALSE(stop.empty()) << free_run.text;
  auto s2 = session(model_.get());
  const GenRun r = generate(s2.get(), nullptr, prompt_, 40, {"never seen", stop});
  ASSERT_EQ(r.status, KVC_OK) << kvc_last_error();
  EXPECT_EQ(r.result.stop_reason, KVC_STOP_SEQUENCE);
  EXPECT_EQ(r.result.stop_index, 1);
  EXPECT_EQ(r.result.n_tokens, static_cast<int32_t>(stop_token + 1));
  EXPECT_EQ(r.text, free_run.text.substr(0, before_len)) << "stop '" << stop << "'";
  EXPECT_EQ(std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + stop_token + 1),
            r.tokens);
  // The token that held the stop's first bytes released nothing of them.
  EXPECT_EQ(r.pieces.back(), "");
}

TEST_F(Generate, CallbackAndStopTokensEndGeneration) {
  auto s = session(model_.get());
  const GenRun r = generate(s.get(), nullptr, prompt_, 30, {}, {}, 3);
  EXPECT_EQ(r.result.stop_reason, KVC_STOP_CALLBACK);
  EXPECT_EQ(r.result.n_tokens, 3);
  // A stop token: the 5th token of the greedy run ends it, its text is not released.
  auto s2 = session(model_.get());
  const GenRun full = generate(s2.get(), nullptr, prompt_, 10);
  auto s3 = session(model_.get());
  const int32_t fifth = full.tokens[4];
  const auto first = std::find(full.tokens.begin(), full.tokens.end(), fifth) - full.tokens.begin();
  const GenRun t = generate(s3.get(), nullptr, prompt_, 10, {}, {12345, fifth});
  EXPECT_EQ(t.result.stop_reason, KVC_STOP_TOKEN);
  EXPECT_EQ(t.result.stop_index, 1);
  EXPECT_EQ(t.result.n_tokens, first + 1);
  std::string before;
  for (int i = 0; i < first; ++i) before += full.pieces[static_cast<size_t>(i)];
  EXPECT_EQ(t.text, before);
  // max_tokens 0 feeds the prompt only.
  auto s4 = session(model_.get());
  const GenRun z = generate(s4.get(), nullptr, prompt_, 0);
  ASSERT_EQ(z.status, KVC_OK);
  EXPECT_EQ(z.result.n_tokens, 0);
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  ASSERT_EQ(kvc_session_cache_stats(s4.get(), &st), KVC_OK);
  EXPECT_EQ(st.n_tokens_seen, static_cast<int64_t>(prompt_.size()));
}

TEST_F(Generate, UnderAnEvictingPolicyTheCacheStaysBounded) {
  std::vector<kvc_param> params = {{"start_size", "4"}, {"recent_size", "12"}};
  auto s = session(model_.get(), "streaming", params);
  const GenRun r = generate(s.get(), nullptr, prompt_, 40);
  ASSERT_EQ(r.status, KVC_OK) << kvc_last_error();
  EXPECT_EQ(r.result.n_tokens, 40);
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  ASSERT_EQ(kvc_session_cache_stats(s.get(), &st), KVC_OK);
  EXPECT_LE(st.max_entries_now, 16);
}

TEST_F(Generate, BadArgumentsAreClearErrors) {
  auto s = session(model_.get());
  auto expect_error = [](kvc_status st, kvc_status want, std::vector<std::string> words) {
    EXPECT_EQ(st, want);
    const std::string msg = kvc_last_error();
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << msg << " / " << w;
  };
  expect_error(generate(s.get(), nullptr, prompt_, -1).status, KVC_ERR_INVALID_ARGUMENT,
               {"max_tokens", "-1"});
  expect_error(generate(s.get(), nullptr, {}, 5).status, KVC_ERR_INVALID_ARGUMENT,
               {"prompt", "empty"});
  expect_error(generate(s.get(), nullptr, prompt_, 5, {"ok", ""}).status,
               KVC_ERR_INVALID_ARGUMENT, {"stop[1]", "empty"});
  kvc_generate_options o;
  kvc_generate_options_init(&o);
  EXPECT_EQ(o.max_tokens, 128);
  const char* stops[] = {"a", nullptr};
  o.stop = stops;
  o.n_stop = 2;
  expect_error(kvc_generate(s.get(), nullptr, prompt_.data(), prompt_.size(), &o, nullptr, 0,
                            nullptr),
               KVC_ERR_INVALID_ARGUMENT, {"stop[1]", "NULL"});
  kvc_generate_options_init(&o);
  o.max_tokens = 8;
  int32_t small[4];
  expect_error(kvc_generate(s.get(), nullptr, prompt_.data(), prompt_.size(), &o, small, 4,
                            nullptr),
               KVC_ERR_BUFFER_TOO_SMALL, {"4", "8"});
  expect_error(kvc_generate(nullptr, nullptr, prompt_.data(), prompt_.size(), &o, nullptr, 0,
                            nullptr),
               KVC_ERR_INVALID_ARGUMENT, {"session"});
  // Nothing was fed by the failed calls.
  kvc_cache_stats st;
  kvc_cache_stats_init(&st);
  ASSERT_EQ(kvc_session_cache_stats(s.get(), &st), KVC_OK);
  EXPECT_EQ(st.n_tokens_seen, 0);
}

}  // namespace
}  // namespace kvc
