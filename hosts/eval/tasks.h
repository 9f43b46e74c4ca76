// Retrieval tasks: passkey, needle in a haystack (RULER-style) and copy, generated
// deterministically from a seed (no downloads), with their scorers and the runs that answer
// them with a session.
//
// Every instance is token ids: `prompt` is fed, `answer` is the expected continuation. Texts are
// laid out as pieces (an instruction, filler units, needles, a question), each tokenized alone
// and concatenated, so lengths and the needle's position are exact in tokens. Pieces meet at a
// space or a newline, where the byte-level BPE pre-tokenizer splits anyway.
//
//  passkey  (Mohtashami & Jaggi 2023, as StreamingLLM / LongLoRA run it): a 5-digit key in the
//           repeated filler at a depth, then "What is the pass key? The pass key is". Scored on
//           the greedy answer: right iff its first number is the key.
//  needle   (RULER's niah): "One of the special magic numbers for <key> is: <7 digits>."; single
//           (one needle), multikey (several keys, one asked for), multivalue (one key with
//           several values, all asked for). Scored as RULER's string_match_all: the share of
//           expected values found in the greedy answer.
//  copy     a random span of word tokens, a gap of filler, the span again; both copies follow a
//           marker. Scored teacher-forced on the second copy: mean NLL, the share of tokens the
//           argmax predicts, and exact match (every token the argmax, i.e. greedy decoding
//           reproduces the span).
//
// Runs feed the prompt one token per step as far as the policy is concerned (kvc_session_score,
// stream mode, whose exact block path gives the token-by-token results), so the policy evicts
// while it reads; a batched prefill would let the question attend to the whole prompt at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvc/kvc.h"

namespace kvc::hosts::tasks {

// Text to ids (no special tokens). tokenizer_function adapts a kvc_tokenizer.
using Tokenize = std::function<std::vector<int32_t>(const std::string&)>;
Tokenize tokenizer_function(const kvc_tokenizer* tokenizer);

// SplitMix64 (the sampler's generator): the n-th output for a seed.
uint64_t splitmix64(uint64_t seed, uint64_t n);
// A seed for one instance from a run's seed and the instance's coordinates (task, length,
// depth index, sample, ...): instances are independent of the order they are made in.
uint64_t derive_seed(uint64_t seed, const std::vector<uint64_t>& parts);

// The haystack: units laid out in order, cyclically.
struct Filler {
  std::string name;                        // "repeat", "kjv"
  std::vector<std::vector<int32_t>> units; // each a sentence ("repeat") or a verse line ("kjv")
  bool lines = false;  // units end with "\n" (needles and the question become lines too)
  bool random_start = false;  // each instance starts at a seeded unit (else at unit 0)
};

// The passkey filler: " The grass is green. The sky is blue. The sun is yellow. Here we go.
// There and back again." as five units, repeated.
Filler repeat_filler(const Tokenize& tokenize);
// One unit per non-empty line of `text` (each with its "\n"); instances start at a seeded line.
Filler text_filler(const Tokenize& tokenize, const std::string& text, const std::string& name);
// The held-out KJV books: every .txt file of `dir` (data/kjv/eval), in name order.
std::string read_text_folder(const std::filesystem::path& dir);

struct Instance {
  std::string task;     // "passkey", "needle_single", "needle_multikey", "needle_multivalue", "copy"
  std::string filler;   // the filler's name
  uint64_t seed = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> answer;         // ids of the expected answer
  std::vector<std::string> expected;   // strings the generation scorers look for
  std::string query;                   // needle: the key asked for
  int64_t target_length = 0;           // the length asked for (prompt tokens; copy: gap)
  double depth = 0;                    // asked for, in [0, 1]
  double actual_depth = 0;             // the asked-for needle's start / the haystack's length
  std::vector<int64_t> needle_positions;  // token index in `prompt` where each needle starts
  int64_t span = 0, gap = 0;           // copy
  int32_t max_new_tokens = 0;          // what a greedy answer needs

  nlohmann::ordered_json describe() const;  // everything but the ids
};

// Passkey: `length` prompt tokens at most (filler units are added in order while they fit, so
// the prompt may be up to one unit shorter), the key at `depth` of the filler. Throws std::invalid_argument when `length` cannot hold the rest.
Instance make_passkey(const Tokenize& tokenize, const Filler& filler, int64_t length,
                      double depth, uint64_t seed);

struct NeedleOptions {
  std::string variant = "single";  // single | multikey | multivalue
  int num_keys = 4;                // multikey: needles in all (one is asked for)
  int num_values = 4;              // multivalue: values of the one key
};
// Needle: the asked-for needle at `depth`, the others at seeded depths.
Instance make_needle(const Tokenize& tokenize, const Filler& filler, const NeedleOptions& options,
                     int64_t length, double depth, uint64_t seed);

// Word tokens (a space then letters only) for copy spans.
std::vector<int32_t> word_pool(const kvc_tokenizer* tokenizer);
// Copy: marker + `span` ids drawn from `pool` + `gap` filler tokens + marker; the answer is the
// span. Throws std::invalid_argument for an empty pool or span < 1.
Instance make_copy(const Tokenize& tokenize, const Filler& filler,
                   const std::vector<int32_t>& pool, int64_t span, int64_t gap, uint64_t seed);

// ---- scorers ---------------------------------------------------------------------------------

struct Score {
  double score = 0;      // 1 right, 0 wrong; needle: the share of expected values found
  bool correct = false;  // score == 1
  std::string parsed;    // passkey: the number read from the answer ("" if none)
};
// The first run of digits in `generated` equals the key.
Score score_passkey(const Instance& instance, const std::string& generated);
// RULER's string_match_all: each expected value found (as a substring) in `generated`.
Score score_needle(const Instance& instance, const std::string& generated);

struct CopyScore {
  double mean_nll = 0;        // nats per token of the second copy
  double token_accuracy = 0;  // share of its tokens that are the argmax
  bool exact_match = false;   // all of them
};
// `nll[i]` and `predicted[i]` (the argmax) for answer token i, teacher-forced.
CopyScore score_copy(const Instance& instance, const std::vector<float>& nll,
                     const std::vector<int32_t>& predicted);

// ---- runs ------------------------------------------------------------------------------------

// Feeds prompt[0..n-1) (stream mode), then generates greedily from the last prompt token with
// kvc_generate for `max_new_tokens` (0: the instance's) tokens; returns the text. The session
// should be fresh (reset); it holds the text afterwards. Throws std::runtime_error with the
// library's message on failure.
std::string answer_greedy(kvc_session* session, const Instance& instance,
                          int32_t max_new_tokens = 0);
// Feeds the prompt and the answer teacher-forced (stream mode) and scores the answer; the
// argmax runs over the ids the model's tokenizer names (the output matrix may be padded).
CopyScore run_copy(const kvc_model* model, kvc_session* session, const Instance& instance);

}  // namespace kvc::hosts::tasks
