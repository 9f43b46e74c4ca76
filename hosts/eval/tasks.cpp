#include "tasks.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "runtime.h"

namespace kvc::hosts::tasks {

namespace {

// A stream of SplitMix64 outputs.
class Rng {
 public:
  explicit Rng(uint64_t seed) : seed_(seed) {}
  uint64_t next() { return splitmix64(seed_, n_++); }
  uint64_t below(uint64_t bound) { return next() % bound; }  // bias < 2^-40 for our bounds
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t seed_;
  uint64_t n_ = 0;
};

const char* const kAdjectives[] = {"silent", "golden", "ancient", "bright",  "hidden",
                                   "narrow", "gentle", "bitter",  "frozen",  "hollow",
                                   "crimson", "distant", "humble", "restless", "velvet",
                                   "wooden", "scarlet", "tender", "weary",   "radiant"};
const char* const kNouns[] = {"river",   "lantern", "harbor",  "meadow", "falcon",
                              "orchard", "compass", "glacier", "thistle", "beacon",
                              "canyon",  "willow",  "anchor",  "ember",  "garnet",
                              "pebble",  "quarry",  "saddle",  "tunnel", "violin"};
constexpr size_t kNumAdjectives = sizeof kAdjectives / sizeof kAdjectives[0];
constexpr size_t kNumNouns = sizeof kNouns / sizeof kNouns[0];

// Distinct random numbers of `digits` digits (no leading zero).
std::vector<uint64_t> distinct_numbers(Rng& rng, int digits, int count) {
  uint64_t lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  const uint64_t span = 9 * lo;
  std::vector<uint64_t> out;
  while (static_cast<int>(out.size()) < count) {
    const uint64_t v = lo + rng.below(span);
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  }
  return out;
}

std::vector<std::string> distinct_keys(Rng& rng, int count) {
  if (count > static_cast<int>(kNumAdjectives * kNumNouns))
    throw std::invalid_argument("needle: at most " + std::to_string(kNumAdjectives * kNumNouns) +
                                " keys");
  std::vector<std::string> out;
  while (static_cast<int>(out.size()) < count) {
    const std::string k = std::string(kAdjectives[rng.below(kNumAdjectives)]) + "-" +
                          kNouns[rng.below(kNumNouns)];
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  }
  return out;
}

// A piece of text as the filler lays it out: a line of its own, or a sentence after a space.
std::string as_piece(const Filler& filler, const std::string& sentence) {
  return filler.lines ? sentence + "\n" : " " + sentence;
}

struct Needle {
  std::vector<int32_t> ids;
  double depth;
};

// Lays out: head, filler units (as many as fit in `length` with the needles and the tail),
// the needles at their depths (unit boundaries nearest to depth x filler tokens), then tail.
// Returns the prompt and each needle's start (in needle order).
std::vector<int32_t> lay_out(const Filler& filler, const std::vector<int32_t>& head,
                             std::vector<Needle> needles, const std::vector<int32_t>& tail,
                             int64_t length, Rng& rng, std::vector<int64_t>* positions,
                             int64_t* filler_tokens, const std::string& task) {
  if (filler.units.empty()) throw std::invalid_argument(task + ": the filler is empty");
  int64_t fixed = static_cast<int64_t>(head.size() + tail.size());
  for (const auto& n : needles) fixed += static_cast<int64_t>(n.ids.size());
  if (fixed > length)
    throw std::invalid_argument(task + ": a prompt of " + std::to_string(length) +
                                " tokens cannot hold the instruction, needles and question (" +
                                std::to_string(fixed) + " tokens)");
  const int64_t budget = length - fixed;
  size_t unit = filler.random_start ? static_cast<size_t>(rng.below(filler.units.size())) : 0;
  std::vector<const std::vector<int32_t>*> units;
  std::vector<int64_t> offsets = {0};  // token offset of each unit boundary
  int64_t used = 0;
  // Units in order while they fit: the haystack is contiguous text, up to one unit short.
  for (;;) {
    const auto& u = filler.units[unit];
    unit = (unit + 1) % filler.units.size();
    if (used + static_cast<int64_t>(u.size()) > budget) break;
    units.push_back(&u);
    used += static_cast<int64_t>(u.size());
    offsets.push_back(used);
  }
  *filler_tokens = used;
  // The boundary nearest to each needle's depth; equal boundaries keep the needles' order.
  std::vector<size_t> at(needles.size());
  for (size_t i = 0; i < needles.size(); ++i) {
    const double target = needles[i].depth * static_cast<double>(used);
    size_t best = 0;
    for (size_t b = 1; b < offsets.size(); ++b)
      if (std::abs(static_cast<double>(offsets[b]) - target) <
          std::abs(static_cast<double>(offsets[best]) - target))
        best = b;
    at[i] = best;
  }
  std::vector<int32_t> out = head;
  positions->assign(needles.size(), 0);
  auto place = [&](size_t boundary) {
    for (size_t i = 0; i < needles.size(); ++i) {
      if (at[i] != boundary) continue;
      (*positions)[i] = static_cast<int64_t>(out.size());
      out.insert(out.end(), needles[i].ids.begin(), needles[i].ids.end());
    }
  };
  for (size_t b = 0; b < units.size(); ++b) {
    place(b);
    out.insert(out.end(), units[b]->begin(), units[b]->end());
  }
  place(units.size());
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

// Depth of a needle as laid out: tokens of filler before it over all filler tokens.
double actual_depth(int64_t position, int64_t head, const std::vector<int64_t>& others_before,
                    int64_t filler_tokens) {
  if (filler_tokens == 0) return 0;
  int64_t before = position - head;
  for (int64_t n : others_before) before -= n;
  return static_cast<double>(before) / static_cast<double>(filler_tokens);
}

void check_depth(double depth, const std::string& task) {
  if (!(depth >= 0 && depth <= 1))
    throw std::invalid_argument(task + ": depth " + std::to_string(depth) +
                                " is outside [0, 1]");
}

}  // namespace

uint64_t splitmix64(uint64_t seed, uint64_t n) {
  uint64_t z = seed + (n + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t derive_seed(uint64_t seed, const std::vector<uint64_t>& parts) {
  uint64_t h = splitmix64(seed, 0);
  for (uint64_t p : parts) h = splitmix64(h ^ p, 0);
  return h;
}

Tokenize tokenizer_function(const kvc_tokenizer* tokenizer) {
  return [tokenizer](const std::string& text) {
    return tokenize_text(tokenizer, text, "task text");
  };
}

Filler repeat_filler(const Tokenize& tokenize) {
  Filler f;
  f.name = "repeat";
  for (const char* s : {" The grass is green.", " The sky is blue.", " The sun is yellow.",
                        " Here we go.", " There and back again."})
    f.units.push_back(tokenize(s));
  return f;
}

Filler text_filler(const Tokenize& tokenize, const std::string& text, const std::string& name) {
  Filler f;
  f.name = name;
  f.lines = true;
  f.random_start = true;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    f.units.push_back(tokenize(line + "\n"));
  }
  return f;
}

std::string read_text_folder(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
  if (ec || files.empty())
    throw std::runtime_error("no .txt files in '" + dir.string() + "'" +
                             (ec ? " (" + ec.message() + ")" : std::string()));
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& p : files) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    text += s.str();
    if (!text.empty() && text.back() != '\n') text += '\n';
  }
  return text;
}

nlohmann::ordered_json Instance::describe() const {
  nlohmann::ordered_json j = {{"task", task},
                              {"filler", filler},
                              {"seed", seed},
                              {"prompt_tokens", prompt.size()},
                              {"answer_tokens", answer.size()},
                              {"expected", expected}};
  if (task == "copy") {
    j["span"] = span;
    j["gap"] = gap;
  } else {
    j["target_length"] = target_length;
    j["depth"] = depth;
    j["actual_depth"] = actual_depth;
    j["needle_positions"] = needle_positions;
    if (!query.empty()) j["query"] = query;
  }
  return j;
}

Instance make_passkey(const Tokenize& tokenize, const Filler& filler, int64_t length,
                      double depth, uint64_t seed) {
  check_depth(depth, "passkey");
  Rng rng(seed);
  const std::string key = std::to_string(distinct_numbers(rng, 5, 1)[0]);
  const std::string intro =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
      "it. I will quiz you about the important information there.";
  const std::vector<int32_t> head = tokenize(filler.lines ? intro + "\n" : intro);
  const std::vector<int32_t> needle =
      tokenize(as_piece(filler, "The pass key is " + key + ". Remember it. " + key +
                                    " is the pass key."));
  const std::vector<int32_t> tail = tokenize(
      filler.lines ? "What is the pass key? The pass key is" : " What is the pass key? The pass key is");
  Instance in;
  in.task = "passkey";
  in.filler = filler.name;
  in.seed = seed;
  in.target_length = length;
  in.depth = depth;
  int64_t filler_tokens = 0;
  in.prompt = lay_out(filler, head, {{needle, depth}}, tail, length, rng, &in.needle_positions,
                      &filler_tokens, "passkey");
  in.actual_depth = actual_depth(in.needle_positions[0], static_cast<int64_t>(head.size()), {},
                                 filler_tokens);
  in.answer = tokenize(" " + key);
  in.expected = {key};
  in.max_new_tokens = static_cast<int32_t>(in.answer.size()) + 2;
  return in;
}

Instance make_needle(const Tokenize& tokenize, const Filler& filler, const NeedleOptions& options,
                     int64_t length, double depth, uint64_t seed) {
  const std::string& v = options.variant;
  if (v != "single" && v != "multikey" && v != "multivalue")
    throw std::invalid_argument("needle: variant '" + v +
                                "' is not one of single, multikey, multivalue");
  check_depth(depth, "needle");
  const int n_keys = v == "multikey" ? options.num_keys : 1;
  const int n_values = v == "multivalue" ? options.num_values : 1;
  if (n_keys < 1 || n_values < 1)
    throw std::invalid_argument("needle: num_keys and num_values must be >= 1");
  Rng rng(seed);
  const std::vector<std::string> keys = distinct_keys(rng, n_keys);
  const std::vector<uint64_t> values = distinct_numbers(rng, 7, std::max(n_keys, n_values));
  const std::string query = keys[0];  // the asked-for key: keys[0], at `depth`
  auto needle_text = [&](const std::string& k, uint64_t value) {
    return as_piece(filler, "One of the special magic numbers for " + k + " is: " +
                                std::to_string(value) + ".");
  };
  // Needle 0 at `depth`; the others (other keys, or more values of the key) at seeded depths.
  std::vector<Needle> needles;
  const int total = std::max(n_keys, n_values);
  for (int i = 0; i < total; ++i) {
    const std::string& k = v == "multikey" ? keys[static_cast<size_t>(i)] : query;
    needles.push_back({tokenize(needle_text(k, values[static_cast<size_t>(i)])),
                       i == 0 ? depth : rng.uniform()});
  }
  const std::string intro =
      "Some special magic numbers are hidden within the following text. Make sure to memorize "
      "it. I will quiz you about the numbers afterwards.";
  const std::string question =
      v == "multivalue"
          ? "What are all the special magic numbers for " + query +
                " mentioned in the provided text? The special magic numbers for " + query +
                " mentioned in the provided text are"
          : "What is the special magic number for " + query +
                " mentioned in the provided text? The special magic number for " + query +
                " mentioned in the provided text is";
  const std::vector<int32_t> head = tokenize(filler.lines ? intro + "\n" : intro);
  const std::vector<int32_t> tail = tokenize(filler.lines ? question : " " + question);
  Instance in;
  in.task = "needle_" + v;
  in.filler = filler.name;
  in.seed = seed;
  in.query = query;
  in.target_length = length;
  in.depth = depth;
  int64_t filler_tokens = 0;
  in.prompt = lay_out(filler, head, needles, tail, length, rng, &in.needle_positions,
                      &filler_tokens, in.task);
  std::vector<int64_t> before;  // lengths of the needles laid out before needle 0
  for (size_t i = 1; i < needles.size(); ++i)
    if (in.needle_positions[i] < in.needle_positions[0])
      before.push_back(static_cast<int64_t>(needles[i].ids.size()));
  in.actual_depth = actual_depth(in.needle_positions[0], static_cast<int64_t>(head.size()),
                                 before, filler_tokens);
  std::string answer;
  if (v == "multivalue") {
    // In the order the values appear in the text.
    std::vector<size_t> order(needles.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return in.needle_positions[a] < in.needle_positions[b];
    });
    for (size_t i : order) {
      in.expected.push_back(std::to_string(values[i]));
      answer += (answer.empty() ? " " : ", ") + in.expected.back();
    }
  } else {
    in.expected = {std::to_string(values[0])};
    answer = " " + in.expected[0];
  }
  in.answer = tokenize(answer);
  in.max_new_tokens = static_cast<int32_t>(in.answer.size()) + (v == "multivalue" ? 8 : 4);
  return in;
}

std::vector<int32_t> word_pool(const kvc_tokenizer* tokenizer) {
  std::vector<int32_t> pool;
  const int32_t n = kvc_tokenizer_vocab_size(tokenizer);
  char buf[256];
  for (int32_t id = 0; id < n; ++id) {
    size_t len = 0;
    if (kvc_detokenize(tokenizer, &id, 1, buf, sizeof buf, &len) != KVC_OK) continue;
    if (len < 3 || buf[0] != ' ') continue;
    bool letters = true;
    for (size_t i = 1; i < len; ++i)
      letters = letters && std::isalpha(static_cast<unsigned char>(buf[i])) != 0;
    if (letters) pool.push_back(id);
  }
  return pool;
}

Instance make_copy(const Tokenize& tokenize, const Filler& filler,
                   const std::vector<int32_t>& pool, int64_t span, int64_t gap, uint64_t seed) {
  if (pool.empty()) throw std::invalid_argument("copy: the token pool is empty");
  if (span < 1) throw std::invalid_argument("copy: span " + std::to_string(span) + " < 1");
  if (gap < 0) throw std::invalid_argument("copy: gap " + std::to_string(gap) + " < 0");
  if (gap > 0 && filler.units.empty()) throw std::invalid_argument("copy: the filler is empty");
  Rng rng(seed);
  // The span: distinct ids while the pool allows (a repeat would make the copy ambiguous).
  std::vector<int32_t> ids;
  const bool distinct = static_cast<int64_t>(pool.size()) >= span;
  while (static_cast<int64_t>(ids.size()) < span) {
    const int32_t id = pool[rng.below(pool.size())];
    if (distinct && std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
    ids.push_back(id);
  }
  const std::vector<int32_t> marker = tokenize("\n>>");
  Instance in;
  in.task = "copy";
  in.filler = filler.name;
  in.seed = seed;
  in.span = span;
  in.gap = gap;
  in.target_length = gap;
  in.prompt = marker;
  in.needle_positions = {static_cast<int64_t>(marker.size())};
  in.prompt.insert(in.prompt.end(), ids.begin(), ids.end());
  // The gap: filler tokens, exactly `gap` of them (the last unit cut).
  size_t unit = filler.random_start ? static_cast<size_t>(rng.below(filler.units.size())) : 0;
  int64_t left = gap;
  while (left > 0) {
    const auto& u = filler.units[unit];
    unit = (unit + 1) % filler.units.size();
    const int64_t take = std::min<int64_t>(left, static_cast<int64_t>(u.size()));
    in.prompt.insert(in.prompt.end(), u.begin(), u.begin() + take);
    left -= take;
  }
  in.prompt.insert(in.prompt.end(), marker.begin(), marker.end());
  in.answer = ids;
  in.max_new_tokens = static_cast<int32_t>(span);
  return in;
}

Score score_passkey(const Instance& instance, const std::string& generated) {
  Score s;
  const size_t start = generated.find_first_of("0123456789");
  if (start != std::string::npos) {
    size_t end = start;
    while (end < generated.size() && std::isdigit(static_cast<unsigned char>(generated[end])))
      ++end;
    s.parsed = generated.substr(start, end - start);
  }
  s.correct = !instance.expected.empty() && s.parsed == instance.expected[0];
  s.score = s.correct ? 1.0 : 0.0;
  return s;
}

Score score_needle(const Instance& instance, const std::string& generated) {
  Score s;
  if (instance.expected.empty()) return s;
  size_t found = 0;
  for (const auto& v : instance.expected)
    if (generated.find(v) != std::string::npos) ++found;
  s.score = static_cast<double>(found) / static_cast<double>(instance.expected.size());
  s.correct = found == instance.expected.size();
  return s;
}

CopyScore score_copy(const Instance& instance, const std::vector<float>& nll,
                     const std::vector<int32_t>& predicted) {
  const size_t n = instance.answer.size();
  if (nll.size() != n || predicted.size() != n)
    throw std::invalid_argument("copy: " + std::to_string(nll.size()) + " NLLs and " +
                                std::to_string(predicted.size()) + " predictions for " +
                                std::to_string(n) + " answer tokens");
  CopyScore c;
  if (n == 0) return c;
  double sum = 0;
  size_t right = 0;
  for (size_t i = 0; i < n; ++i) {
    sum += nll[i];
    right += predicted[i] == instance.answer[i] ? 1 : 0;
  }
  c.mean_nll = sum / static_cast<double>(n);
  c.token_accuracy = static_cast<double>(right) / static_cast<double>(n);
  c.exact_match = right == n;
  return c;
}

namespace {

void check(kvc_status status, const std::string& what) {
  if (status != KVC_OK)
    throw std::runtime_error(what + ": " + kvc_status_name(status) + ": " + kvc_last_error());
}

// Feeds tokens[0..n) in stream mode; `next` is the token that follows (its NLL is wanted or
// not, but it keeps the last prediction).
void feed(kvc_session* session, const int32_t* tokens, size_t n, const int32_t* next,
          std::vector<float>* nll, float* logits, size_t logits_capacity) {
  kvc_score_options o;
  kvc_score_options_init(&o);
  o.mode = KVC_SCORE_STREAM;
  o.next_token = next;
  o.logits = logits;
  o.logits_capacity = logits_capacity;
  nll->assign(n, 0.0f);
  check(kvc_session_score(session, tokens, n, &o, nll->data(), nll->size()),
        "feeding " + std::to_string(n) + " prompt tokens");
}

int32_t collect_text(void* user, int32_t, const char* piece, size_t len) {
  static_cast<std::string*>(user)->append(piece, len);
  return 0;
}

}  // namespace

std::string answer_greedy(kvc_session* session, const Instance& instance,
                          int32_t max_new_tokens) {
  const auto& p = instance.prompt;
  if (p.empty()) throw std::invalid_argument(instance.task + ": empty prompt");
  std::vector<float> nll;
  if (p.size() > 1) feed(session, p.data(), p.size() - 1, &p.back(), &nll, nullptr, 0);
  std::string text;
  kvc_generate_options o;
  kvc_generate_options_init(&o);
  o.max_tokens = max_new_tokens > 0 ? max_new_tokens : instance.max_new_tokens;
  o.on_token = collect_text;
  o.user_data = &text;
  check(kvc_generate(session, nullptr, &p.back(), 1, &o, nullptr, 0, nullptr),
        "generating the answer");
  return text;
}

CopyScore run_copy(const kvc_model* model, kvc_session* session, const Instance& instance) {
  const auto& p = instance.prompt;
  const auto& a = instance.answer;
  if (p.empty() || a.empty()) throw std::invalid_argument("copy: empty prompt or answer");
  kvc_model_info info;
  kvc_model_info_init(&info);
  check(kvc_model_get_info(model, &info), "model info");
  int32_t n_vocab = info.vocab_size;
  if (const kvc_tokenizer* t = kvc_model_tokenizer(model))
    n_vocab = std::min(n_vocab, kvc_tokenizer_vocab_size(t));
  std::vector<float> nll;
  if (p.size() > 1) feed(session, p.data(), p.size() - 1, &p.back(), &nll, nullptr, 0);
  // The last prompt token and the answer but its last token, whose NLL comes as `next`.
  std::vector<int32_t> tokens = {p.back()};
  tokens.insert(tokens.end(), a.begin(), a.end() - 1);
  const size_t rows = tokens.size();
  const auto width = static_cast<size_t>(info.vocab_size);
  std::vector<float> logits(rows * width);
  feed(session, tokens.data(), rows, &a.back(), &nll, logits.data(), logits.size());
  std::vector<int32_t> predicted(rows);
  for (size_t r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * width;
    predicted[r] = static_cast<int32_t>(std::max_element(row, row + n_vocab) - row);
  }
  return score_copy(instance, nll, predicted);
}

}  // namespace kvc::hosts::tasks
