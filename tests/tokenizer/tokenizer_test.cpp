// Unit tests of the tokenizer: UTF-8 replacement, loading errors, BPE behaviour on a small
// hand-made tokenizer, the C ABI, threads and linear time on long inputs.
#include <gtest/gtest.h>

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/guard.h"
#include "common/error.h"
#include "kvc/kvc.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace kvc {
namespace {

using json = nlohmann::json;

// ---- UTF-8 -------------------------------------------------------------------------------------

// Expected values are Python's bytes.decode("utf-8", errors="replace").
TEST(Utf8, ReplacesMaximalSubpartsLikePython) {
  const std::string R = "\xEF\xBF\xBD";
  const std::pair<std::string, std::string> cases[] = {
      {"a\xED\xA0\x80"
       "b",
       "a" + R + R + R + "b"},  // an encoded lone surrogate: three bytes, three U+FFFD
      {"\xE2\x82", R},         // a truncated sequence is one U+FFFD
      {"\xF0\x9F\x98"
       "abc",
       R + "abc"},
      {"\xC0\xAF", R + R},                        // overlong
      {"\xE0\x80\xAF", R + R + R},                // overlong, second byte out of range
      {"\xF0\x80\x80\xAF", R + R + R + R},        // overlong
      {"\xF4\x90\x80\x80", R + R + R + R},        // above U+10FFFF
      {"\xF5", R},                                // never a lead byte
      {"\xED\x9F\xBF", "\xED\x9F\xBF"},           // U+D7FF is valid
      {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"},   // U+10FFFF is valid
      {"x\xC3", "x" + R},                         // truncated at the end
      {"\xE1\x80\xE1\x80\x80", R + "\xE1\x80\x80"},  // resumes at the byte that broke it
      {"\x80\x80", R + R},                        // stray continuation bytes
      {"\xE0\xA0", R},
      {"\xF0\x90\x80", R},
      {std::string("a\0b", 3), std::string("a\0b", 3)},  // NUL is valid UTF-8
  };
  for (const auto& [in, expected] : cases) {
    EXPECT_EQ(utf8::replace_invalid(in), expected) << "input of " << in.size() << " bytes";
    EXPECT_EQ(utf8::is_valid(in), in == expected);
  }
}

TEST(Utf8, ValidTextIsUnchanged) {
  const std::string text = "plain ASCII, é, 中文, 😀, \xF4\x8F\xBF\xBF";
  EXPECT_TRUE(utf8::is_valid(text));
  EXPECT_EQ(utf8::replace_invalid(text), text);
}

// ---- A small hand-made tokenizer ----------------------------------------------------------

// The 256 byte-level characters as ids 0..255 (in byte order), then merges.
json small_tokenizer() {
  json vocab = json::object();
  int next_cp = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : next_cp++;
    std::string ch;
    if (cp < 0x80) {
      ch.push_back(static_cast<char>(cp));
    } else {
      ch.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      ch.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    vocab[ch] = b;
  }
  const char* merged[] = {"he", "ll", "hell", "hello", "\xC4\xA0w", "or", "\xC4\xA0wor",
                          "ld", "\xC4\xA0world", "aa", "aaaa"};
  for (int i = 0; i < 11; ++i) vocab[merged[i]] = 256 + i;
  return json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       json::array({json{{"id", 267}, {"content", "<|end|>"}, {"special", true},
                         {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                         {"normalized", false}},
                    json{{"id", 268}, {"content", "  "}, {"special", false},
                         {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                         {"normalized", true}}})},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false},
                         {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"vocab", vocab},
        {"merges", json::array({"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "o r",
                                json::array({"\xC4\xA0w", "or"}), "l d", "\xC4\xA0wor ld",
                                "a a", "aa aa"})}}},
  };
}

std::unique_ptr<Tokenizer> load(const json& j) { return Tokenizer::load_json(j.dump(), "t.json"); }

TEST(SmallTokenizer, EncodesWithMergesAndAddedTokens) {
  auto tok = load(small_tokenizer());
  EXPECT_EQ(tok->vocab_size(), 269);
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{259, 264}));
  // The added token is cut out first, so "world" has no leading space to merge with.
  EXPECT_EQ(tok->encode("hello<|end|>world"), (std::vector<int32_t>{259, 267, 'w', 261, 263}));
  // Two spaces are an added token (normalized: true); a third space stays a byte.
  EXPECT_EQ(tok->encode("a   b"), (std::vector<int32_t>{'a', 268, 0x20, 'b'}));
  // "aaaaa": pairs merge left to right by rank: (aa)(aa)a -> (aaaa)a.
  EXPECT_EQ(tok->encode("aaaaa"), (std::vector<int32_t>{266, 'a'}));
  EXPECT_EQ(tok->encode(""), std::vector<int32_t>{});
}

TEST(SmallTokenizer, DecodesAndRoundTrips) {
  auto tok = load(small_tokenizer());
  for (std::string text : {"hello world", "a   b<|end|>", "Grüße, 世界 😀\n\t", ""}) {
    EXPECT_EQ(tok->decode(tok->encode(text)), text);
  }
  EXPECT_EQ(tok->token_to_id("hello"), 259);
  EXPECT_EQ(tok->token_to_id("<|end|>"), 267);
  EXPECT_EQ(tok->token_to_id("nope"), -1);
  EXPECT_EQ(tok->id_to_token(264), "\xC4\xA0world");
  // Decoding bytes that are not UTF-8 (half an emoji) gives U+FFFD, not broken text.
  const int32_t half[] = {0xF0, 0x9F};
  EXPECT_EQ(tok->decode(half, 2), "\xEF\xBF\xBD");
}

TEST(SmallTokenizer, NormalizesToNfc) {
  auto tok = load(small_tokenizer());
  EXPECT_EQ(tok->encode("e\xCC\x81"), tok->encode("\xC3\xA9"));  // e + U+0301 -> é
  EXPECT_EQ(tok->decode(tok->encode("e\xCC\x81")), "\xC3\xA9");
}

TEST(SmallTokenizer, InvalidUtf8IsReplaced) {
  auto tok = load(small_tokenizer());
  EXPECT_EQ(tok->encode("a\xFF"
                        "b\xED\xA0\x80"),
            tok->encode("a\xEF\xBF\xBD"
                        "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
}

TEST(SmallTokenizer, UnknownIdIsOutOfRange) {
  auto tok = load(small_tokenizer());
  for (int32_t bad : {-1, 269, 1 << 30}) {
    try {
      tok->decode(&bad, 1);
      ADD_FAILURE() << "id " << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), KVC_ERR_OUT_OF_RANGE);
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_THROW(tok->id_to_token(bad), Error);
  }
}

// ---- Bad tokenizer files: each error names the file and the field ------------------------

void expect_error(const std::string& text, kvc_status status,
                  std::initializer_list<const char*> words) {
  try {
    Tokenizer::load_json(text, "bad.json");
    ADD_FAILURE() << "accepted: " << text.substr(0, 200);
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    const std::string message = e.what();
    EXPECT_NE(message.find("bad.json"), std::string::npos) << message;
    for (const char* w : words) EXPECT_NE(message.find(w), std::string::npos) << message;
  }
}

void expect_error(const json& j, kvc_status status, std::initializer_list<const char*> words) {
  expect_error(j.dump(), status, words);
}

TEST(BadTokenizerFile, MalformedJson) {
  expect_error(std::string("{\"model\": {"), KVC_ERR_FORMAT, {"not valid JSON"});
  expect_error(std::string("[1, 2]"), KVC_ERR_FORMAT, {"object"});
  expect_error(std::string(""), KVC_ERR_FORMAT, {"not valid JSON"});
}

TEST(BadTokenizerFile, Model) {
  json j = small_tokenizer();
  j.erase("model");
  expect_error(j, KVC_ERR_FORMAT, {"model", "missing"});

  j = small_tokenizer();
  j["model"]["type"] = "WordPiece";
  expect_error(j, KVC_ERR_UNSUPPORTED, {"model.type", "WordPiece"});

  j = small_tokenizer();
  j["model"].erase("merges");
  expect_error(j, KVC_ERR_FORMAT, {"model.merges", "missing"});

  j = small_tokenizer();
  j["model"]["merges"] = "h e";
  expect_error(j, KVC_ERR_FORMAT, {"model.merges", "array"});

  j = small_tokenizer();
  j["model"]["merges"][2] = "he";
  expect_error(j, KVC_ERR_FORMAT, {"model.merges[2]"});

  j = small_tokenizer();
  j["model"]["merges"][1] = 7;
  expect_error(j, KVC_ERR_FORMAT, {"model.merges[1]"});

  j = small_tokenizer();
  j["model"]["merges"][0] = "x \xC3\xBF\xC3\xBF";  // the merged token is not in the vocab
  expect_error(j, KVC_ERR_FORMAT, {"model.merges[0]", "not in model.vocab"});

  j = small_tokenizer();
  j["model"].erase("vocab");
  expect_error(j, KVC_ERR_FORMAT, {"model.vocab", "missing"});

  j = small_tokenizer();
  j["model"]["vocab"]["h"] = -3;
  expect_error(j, KVC_ERR_FORMAT, {"model.vocab[\"h\"]"});

  j = small_tokenizer();
  j["model"]["dropout"] = 0.1;
  expect_error(j, KVC_ERR_UNSUPPORTED, {"model.dropout"});

  j = small_tokenizer();
  j["model"]["byte_fallback"] = true;
  expect_error(j, KVC_ERR_UNSUPPORTED, {"model.byte_fallback"});

  j = small_tokenizer();
  j["model"]["continuing_subword_prefix"] = "##";
  expect_error(j, KVC_ERR_UNSUPPORTED, {"model.continuing_subword_prefix"});
}

TEST(BadTokenizerFile, PipelineStages) {
  json j = small_tokenizer();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error(j, KVC_ERR_UNSUPPORTED, {"normalizer.type", "Lowercase"});

  j = small_tokenizer();
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Strip"}}})}};
  expect_error(j, KVC_ERR_UNSUPPORTED, {"normalizer.normalizers[1].type", "Strip"});

  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(j, KVC_ERR_UNSUPPORTED, {"pre_tokenizer.type", "Whitespace"});

  j = small_tokenizer();
  j["pre_tokenizer"] = nullptr;
  expect_error(j, KVC_ERR_UNSUPPORTED, {"pre_tokenizer"});

  j = small_tokenizer();
  j["pre_tokenizer"] = {{"add_prefix_space", false}};
  expect_error(j, KVC_ERR_FORMAT, {"pre_tokenizer.type", "missing"});

  j = small_tokenizer();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, KVC_ERR_UNSUPPORTED, {"decoder.type", "WordPiece"});

  j = small_tokenizer();
  j["truncation"] = {{"max_length", 512}};
  expect_error(j, KVC_ERR_UNSUPPORTED, {"truncation"});

  j = small_tokenizer();
  j["added_tokens"][0]["lstrip"] = true;
  expect_error(j, KVC_ERR_UNSUPPORTED, {"added_tokens[0].lstrip"});

  j = small_tokenizer();
  j["added_tokens"][1]["id"] = 300;
  expect_error(j, KVC_ERR_UNSUPPORTED, {"added_tokens[1].id", "300"});

  j = small_tokenizer();
  j["added_tokens"][1].erase("content");
  expect_error(j, KVC_ERR_FORMAT, {"added_tokens[1].content", "missing"});
}

TEST(BadTokenizerFile, MissingFileIsIoError) {
  try {
    Tokenizer::load_file("/nonexistent/dir/tokenizer.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KVC_ERR_IO);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/tokenizer.json"), std::string::npos);
  }
}

TEST(SmallTokenizer, SupportedVariants) {
  // A Sequence of normalizers, no normalizer, merges as pairs, add_prefix_space, no regex.
  json j = small_tokenizer();
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", json::array({{{"type", "NFD"}}, {{"type", "NFC"}}})}};
  EXPECT_EQ(load(j)->encode("e\xCC\x81"), load(small_tokenizer())->encode("\xC3\xA9"));
  j["normalizer"] = nullptr;
  EXPECT_EQ(load(j)->encode("e\xCC\x81"), (std::vector<int32_t>{'e', 0xCC, 0x81}));

  j = small_tokenizer();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(load(j)->encode("world"), (std::vector<int32_t>{264}));

  j = small_tokenizer();
  j["pre_tokenizer"]["use_regex"] = false;  // the whole text is one word
  EXPECT_EQ(load(j)->encode("hello world"), (std::vector<int32_t>{259, 264}));
  EXPECT_EQ(load(j)->encode("hello!"), (std::vector<int32_t>{259, '!'}));
}

// The split pattern's \s is Unicode White_Space, as in `tokenizers` (Oniguruma): U+0085 is
// whitespace, U+180E is not (PCRE2's own \s would say the opposite for U+180E). Merges of "!"
// with the first byte of each make the pre-tokenizer's decision visible in the ids.
TEST(SmallTokenizer, SplitWhitespaceIsUnicodeWhiteSpace) {
  json j = small_tokenizer();
  j["added_tokens"] = json::array();
  j["model"]["vocab"]["!\xC3\xA1"] = 267;  // "!" + the character of byte 0xE1
  j["model"]["vocab"]["!\xC3\x82"] = 268;  // "!" + the character of byte 0xC2
  j["model"]["merges"].push_back("! \xC3\xA1");
  j["model"]["merges"].push_back("! \xC3\x82");
  auto tok = load(j);
  // U+180E (E1 A0 8E) is punctuation here: "!" and it form one pre-token and merge.
  EXPECT_EQ(tok->encode("!\xE1\xA0\x8E"), (std::vector<int32_t>{267, 0xA0, 0x8E}));
  // U+0085 (C2 85) is whitespace: it is split from "!" and cannot merge with it.
  EXPECT_EQ(tok->encode("!\xC2\x85"), (std::vector<int32_t>{'!', 0xC2, 0x85}));
}

// ---- C ABI ---------------------------------------------------------------------------------

class TokenizerAbi : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("kvc_tok_abi_" + std::to_string(::getpid()) + ".json");
    std::ofstream(path_) << small_tokenizer().dump();
    ASSERT_EQ(kvc_tokenizer_load(path_.c_str(), &tok_), KVC_OK) << kvc_last_error();
  }
  void TearDown() override {
    kvc_tokenizer_free(tok_);
    std::filesystem::remove(path_);
  }
  std::filesystem::path path_;
  kvc_tokenizer* tok_ = nullptr;
};

TEST_F(TokenizerAbi, TokenizeAndDetokenize) {
  const std::string text = "hello world";
  int32_t ids[8];
  size_t n = 0;
  ASSERT_EQ(kvc_tokenize(tok_, text.data(), text.size(), ids, 8, &n), KVC_OK);
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(ids[0], 259);
  EXPECT_EQ(ids[1], 264);
  char buffer[32];
  size_t len = 0;
  ASSERT_EQ(kvc_detokenize(tok_, ids, n, buffer, sizeof buffer, &len), KVC_OK);
  EXPECT_EQ(std::string(buffer, len), text);
  EXPECT_EQ(buffer[len], '\0');  // terminated when there is room
  EXPECT_EQ(kvc_tokenizer_vocab_size(tok_), 269);
  EXPECT_EQ(kvc_tokenizer_token_to_id(tok_, "hello"), 259);
  EXPECT_EQ(kvc_tokenizer_token_to_id(tok_, "missing"), -1);
  EXPECT_EQ(kvc_tokenizer_token_to_id(tok_, nullptr), -1);
  EXPECT_EQ(kvc_tokenizer_vocab_size(nullptr), 0);
  ASSERT_EQ(kvc_tokenize(tok_, nullptr, 0, nullptr, 0, &n), KVC_OK);  // empty text
  EXPECT_EQ(n, 0u);
}

TEST_F(TokenizerAbi, BufferTooSmallReportsTheSize) {
  const std::string text = "hello world hello";  // hello, Ġworld, Ġ, hello
  int32_t ids[2];
  size_t n = 0;
  EXPECT_EQ(kvc_tokenize(tok_, text.data(), text.size(), ids, 2, &n), KVC_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(n, 4u);
  EXPECT_NE(std::string(kvc_last_error()).find("4 tokens"), std::string::npos);
  size_t needed = 0;
  EXPECT_EQ(kvc_tokenize(tok_, text.data(), text.size(), nullptr, 0, &needed),
            KVC_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(needed, 4u);
  const int32_t hello[] = {259};
  char small[5];
  size_t len = 0;
  EXPECT_EQ(kvc_detokenize(tok_, hello, 1, small, sizeof small, &len), KVC_OK);  // exact fit
  EXPECT_EQ(std::string(small, len), "hello");
  EXPECT_EQ(kvc_detokenize(tok_, hello, 1, small, 4, &len), KVC_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(len, 5u);
}

TEST_F(TokenizerAbi, ErrorsAreStatuses) {
  size_t n = 0;
  int32_t ids[4];
  EXPECT_EQ(kvc_tokenize(nullptr, "x", 1, ids, 4, &n), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvc_last_error()).find("tokenizer"), std::string::npos);
  EXPECT_EQ(kvc_tokenize(tok_, nullptr, 3, ids, 4, &n), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kvc_tokenize(tok_, "x", 1, ids, 4, nullptr), KVC_ERR_INVALID_ARGUMENT);
  const int32_t bad[] = {5, 100000};
  char text[16];
  EXPECT_EQ(kvc_detokenize(tok_, bad, 2, text, sizeof text, &n), KVC_ERR_OUT_OF_RANGE);
  EXPECT_NE(std::string(kvc_last_error()).find("100000"), std::string::npos);
  // Invalid UTF-8 is replaced, not an error.
  EXPECT_EQ(kvc_tokenize(tok_, "a\xFF", 2, ids, 4, &n), KVC_OK);
  EXPECT_EQ(n, 4u);  // 'a' and the three bytes of U+FFFD

  kvc_tokenizer* t = reinterpret_cast<kvc_tokenizer*>(0x1);
  EXPECT_EQ(kvc_tokenizer_load("/nonexistent/tokenizer.json", &t), KVC_ERR_IO);
  EXPECT_EQ(t, nullptr);
  EXPECT_NE(std::string(kvc_last_error()).find("/nonexistent/tokenizer.json"),
            std::string::npos);
  EXPECT_EQ(kvc_tokenizer_load(nullptr, &t), KVC_ERR_INVALID_ARGUMENT);
  kvc_tokenizer_free(nullptr);  // a no-op
}

// ---- GPT-NeoX-20B: threads and long inputs ------------------------------------------------

class NeoxTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto path = test::neox_tokenizer_path();
    if (std::filesystem::exists(path)) tok_ = Tokenizer::load_file(path.string()).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    if (!tok_)
      GTEST_SKIP() << test::neox_tokenizer_path()
                   << " is absent (set KVC_SHARED_DATA_DIR to the folder holding it)";
  }
  static Tokenizer* tok_;
};
Tokenizer* NeoxTokenizer::tok_ = nullptr;

TEST_F(NeoxTokenizer, KnownIds) {
  EXPECT_EQ(tok_->encode("a   b"), (std::vector<int32_t>{66, 50275, 67}));
  EXPECT_EQ(tok_->encode("a b"), (std::vector<int32_t>{66, 270}));
  EXPECT_EQ(tok_->encode("<|endoftext|>"), (std::vector<int32_t>{0}));
  EXPECT_EQ(tok_->vocab_size(), 50281);
  EXPECT_EQ(tok_->token_to_id("<|padding|>"), 1);
}

// Many threads encoding at once (each with its own cache) agree with one thread.
TEST_F(NeoxTokenizer, ConcurrentEncodeIsConsistent) {
  std::vector<std::string> texts;
  for (int i = 0; i < 8; ++i) {
    std::string t;
    for (int k = 0; k < 400; ++k)
      t += "word" + std::to_string((k * 7919 + i * 104729) % 3001) + (k % 5 ? " " : "   ");
    t += "Grüße 世界 😀 e\xCC\x81";
    texts.push_back(t);
  }
  std::vector<std::vector<int32_t>> expected;
  for (const auto& t : texts) expected.push_back(tok_->encode(t));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int th = 0; th < 6; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < 20; ++round) {
        const size_t i = (th + round) % texts.size();
        if (tok_->encode(texts[i]) != expected[i]) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// No quadratic behaviour: megabyte-long words and whitespace runs finish and round-trip.
// A quadratic step would need hours at this size; the bound is CPU time of this thread and
// generous enough for sanitizer builds on a loaded machine (Release: about 0.3 s each).
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

TEST_F(NeoxTokenizer, LongInputsAreLinear) {
  const size_t n = 1 << 20;
  const std::string inputs[] = {
      std::string(n, ' '), std::string(n, 'a'), std::string(n, '\n'),
      std::string(n / 2, 'x') + std::string(n / 2, ' ') + "y", std::string(n, '7'),
      std::string(n, '!')};
  for (const std::string& text : inputs) {
    const double start = thread_cpu_seconds();
    const std::vector<int32_t> ids = tok_->encode(text);
    EXPECT_LT(thread_cpu_seconds() - start, 30.0) << "input starting with '" << text[0] << "'";
    EXPECT_FALSE(ids.empty());
    EXPECT_TRUE(tok_->decode(ids) == text) << "input starting with '" << text[0] << "'";
  }
  // Runs of spaces become the longest added tokens: 2^20 = 43690 * 24 + 16.
  const std::vector<int32_t> ids = tok_->encode(std::string(n, ' '));
  ASSERT_EQ(ids.size(), 43691u);
  EXPECT_EQ(ids.front(), 50254);
  EXPECT_EQ(ids.back(), tok_->token_to_id(std::string(16, ' ')));
}

}  // namespace
}  // namespace kvc
