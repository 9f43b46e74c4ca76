// kvc-generate: text generation under a KV-cache policy (docs/hosts.md, "kvc-generate").
//
// The prompt (--prompt, --prompt_file or standard input) is tokenized with the model's
// tokenizer and prefilled in one step; kvc_generate then samples token by token with the
// library's sampler, the policy evicting as it runs. Text goes to stdout as it is produced; the
// speed (time to first token, tokens/s) and the cache size go to stderr at the end, and --json
// writes a record of the run (written atomically).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "files.h"
#include "options.h"
#include "program.h"
#include "report.h"
#include "runtime.h"
#include "schema.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {
namespace {

constexpr const char* kProgram = "kvc-generate";
using Clock = std::chrono::steady_clock;

struct SamplerFree {
  void operator()(kvc_sampler* s) const { kvc_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<kvc_sampler, SamplerFree>;

// Where a [generate] setting came from, for messages: "--top_p" or "[generate] top_p".
std::string origin(const Options& options, const std::string& key) {
  if (options.source("generate", key) == Source::CommandLine) return "--" + key;
  const std::string where = options.config_path().empty() ? "" : options.config_path() + ": ";
  return where + "[generate] " + key;
}

// The sampler of the settings; a value the library rejects is a usage error naming the flag.
SamplerPtr make_sampler(const Options& options, kvc_sampler_options* out) {
  kvc_sampler_options& o = *out;
  kvc_sampler_options_init(&o);
  o.temperature = static_cast<float>(options.get_float("generate", "temperature"));
  o.top_k = static_cast<int32_t>(options.get_int("generate", "top_k"));
  o.top_p = static_cast<float>(options.get_float("generate", "top_p"));
  o.min_p = static_cast<float>(options.get_float("generate", "min_p"));
  o.repetition_penalty = static_cast<float>(options.get_float("generate", "repetition_penalty"));
  o.repetition_last_n = static_cast<int32_t>(options.get_int("generate", "repetition_last_n"));
  o.seed = static_cast<uint64_t>(options.get_int("generate", "seed"));
  if (options.get_int("generate", "top_k") > INT32_MAX)
    throw UsageError(origin(options, "top_k") + ": " +
                     std::to_string(options.get_int("generate", "top_k")) + " is too large");
  kvc_sampler* s = nullptr;
  if (kvc_sampler_create(&o, &s) != KVC_OK) {
    const std::string message = kvc_last_error();
    for (const char* key : {"temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                            "repetition_last_n"}) {
      if (message.find(std::string("kvc_sampler_options.") + key + " ") != std::string::npos)
        throw UsageError(origin(options, key) + ": " + message);
    }
    throw UsageError(message);
  }
  return SamplerPtr(s);
}

// --stop: sequences separated by '|', with the escapes \n \t \r \\ \|.
std::vector<std::string> parse_stops(const Options& options) {
  const auto text = options.get_opt_string("generate", "stop");
  std::vector<std::string> stops;
  if (!text) return stops;
  std::string cur;
  auto finish = [&]() {
    if (cur.empty())
      throw UsageError(origin(options, "stop") + ": '" + *text +
                       "' holds an empty stop sequence (sequences are separated by '|'; write "
                       "\\| for a literal '|')");
    stops.push_back(cur);
    cur.clear();
  };
  for (size_t i = 0; i < text->size(); ++i) {
    const char c = (*text)[i];
    if (c == '|') {
      finish();
    } else if (c == '\\') {
      if (i + 1 >= text->size())
        throw UsageError(origin(options, "stop") + ": '" + *text + "' ends with a lone '\\'");
      const char e = (*text)[++i];
      switch (e) {
        case 'n': cur += '\n'; break;
        case 't': cur += '\t'; break;
        case 'r': cur += '\r'; break;
        case '\\': cur += '\\'; break;
        case '|': cur += '|'; break;
        default:
          throw UsageError(origin(options, "stop") + ": unknown escape '\\" + std::string(1, e) +
                           "' in '" + *text + "' (allowed: \\n \\t \\r \\\\ \\|)");
      }
    } else {
      cur += c;
    }
  }
  finish();
  return stops;
}

struct Prompt {
  std::string text;
  std::string source;  // "argument", "file", "stdin"
  std::string file;
};

Prompt read_prompt(const Options& options) {
  const auto text = options.get_opt_string("generate", "prompt");
  const auto file = options.get_opt_string("generate", "prompt_file");
  if (text && file)
    throw UsageError(origin(options, "prompt") + " and " + origin(options, "prompt_file") +
                     " are both given; give one prompt");
  Prompt p;
  if (text) {
    p = {*text, "argument", ""};
  } else if (file) {
    std::error_code ec;
    if (!fs::is_regular_file(*file, ec))
      throw RunError(origin(options, "prompt_file") + ": '" + *file +
                     "' is not a readable file");
    p = {read_file(*file), "file", *file};
  } else {
    if (::isatty(STDIN_FILENO))
      warn(kProgram, "reading the prompt from standard input (end it with Ctrl-D; or give "
                     "--prompt TEXT or --prompt_file FILE)");
    p = {std::string(std::istreambuf_iterator<char>(std::cin), {}), "stdin", ""};
  }
  if (p.text.empty())
    throw UsageError("the prompt (" + (p.source == "argument" ? origin(options, "prompt")
                                       : p.source == "file"   ? "'" + p.file + "'"
                                                              : std::string("standard input")) +
                     ") is empty; generation starts from at least one token");
  if (auto bad = first_invalid_utf8(p.text))
    warn(kProgram, "the prompt is not valid UTF-8 at byte " + std::to_string(*bad) +
                   "; invalid bytes are read as U+FFFD");
  return p;
}

const char* reason_name(kvc_stop_reason r) {
  switch (r) {
    case KVC_STOP_MAX_TOKENS: return "max_tokens";
    case KVC_STOP_SEQUENCE: return "stop_sequence";
    case KVC_STOP_TOKEN: return "stop_token";
    case KVC_STOP_CALLBACK: return "callback";
  }
  return "unknown";
}

// What the callback sees and records.
struct Stream {
  std::string text;
  std::vector<int32_t> tokens;
  std::optional<Clock::time_point> first;
  bool failed = false;  // stdout went away (a closed pipe): stop generating
};

int32_t on_token(void* user, int32_t token, const char* piece, size_t len) {
  auto* s = static_cast<Stream*>(user);
  if (!s->first) s->first = Clock::now();
  s->tokens.push_back(token);
  s->text.append(piece, len);
  if (len > 0 && (std::fwrite(piece, 1, len, stdout) != len || std::fflush(stdout) != 0)) {
    s->failed = true;
    return 1;
  }
  return 0;
}

int run_generate(Options& options) {
  const std::string mode = options.get_string("policy", "name");
  if (mode == "all")
    throw UsageError("--mode all: kvc-generate runs one policy; name it (e.g. --mode streaming)");
  // Everything the user typed is checked before the model is loaded.
  kvc_sampler_options sampler_options;
  SamplerPtr sampler = make_sampler(options, &sampler_options);
  const std::vector<std::string> stops = parse_stops(options);
  const int64_t max_tokens = options.get_int("generate", "max_tokens");
  if (max_tokens > INT32_MAX)
    throw UsageError(origin(options, "max_tokens") + ": " + std::to_string(max_tokens) +
                     " is too large (at most " + std::to_string(INT32_MAX) + ")");
  const auto json_path = options.get_opt_string("generate", "json");
  std::vector<std::string> warnings;
  PolicyCatalog catalog(options.get_opt_string("policy", "search_path").value_or(""));
  RunSpec run = make_run(options, catalog, mode, true, &warnings);
  for (const auto& w : warnings) warn(kProgram, w);
  if (options.is_set("model", "tokenizer"))
    warn(kProgram, "[model] tokenizer is ignored: kvc-generate uses the model's own tokenizer");
  const Prompt prompt = read_prompt(options);

  LoadedModel model = load_model(options, static_cast<uint64_t>(options.get_int("model", "seed")));
  const kvc_tokenizer* tok = kvc_model_tokenizer(model.model.get());
  if (tok == nullptr)
    throw RunError("model '" + model.path + "' has no tokenizer.json; kvc-generate needs the "
                   "model's tokenizer to read the prompt and write text");
  const std::vector<int32_t> prompt_ids = tokenize_text(tok, prompt.text, "the prompt");
  if (prompt_ids.empty()) throw UsageError("the prompt encodes to no tokens");
  std::vector<int32_t> stop_tokens;
  const int32_t eos = kvc_tokenizer_token_to_id(tok, "<|endoftext|>");
  if (eos >= 0 && !options.get_bool("generate", "ignore_eos")) stop_tokens.push_back(eos);

  SessionPtr session = make_session(model.model.get(), run, 0);
  const kvc_cache_stats before = cache_stats(session.get());
  const int64_t max_pos = model.info.max_position_embeddings;
  const int64_t last_position = static_cast<int64_t>(prompt_ids.size()) + max_tokens - 1;
  const bool unbounded = before.capacity < 0;
  if ((unbounded || run.positions == KVC_POSITIONS_ORIGINAL) && last_position > max_pos)
    warn(kProgram, "positions reach " + std::to_string(last_position) + ", past the model's "
                   "context (" + std::to_string(max_pos) + "): extrapolation");

  std::vector<const char*> stop_ptrs;
  for (const auto& s : stops) stop_ptrs.push_back(s.c_str());
  Stream stream;
  kvc_generate_options go;
  kvc_generate_options_init(&go);
  go.max_tokens = static_cast<int32_t>(max_tokens);
  go.stop = stop_ptrs.empty() ? nullptr : stop_ptrs.data();
  go.n_stop = stop_ptrs.size();
  go.stop_tokens = stop_tokens.empty() ? nullptr : stop_tokens.data();
  go.n_stop_tokens = stop_tokens.size();
  go.on_token = on_token;
  go.user_data = &stream;
  kvc_generate_result result;
  kvc_generate_result_init(&result);
  const bool stream_prefill = options.get_string("generate", "prefill") == "stream";
  const auto t0 = Clock::now();
  const int32_t* first = prompt_ids.data();
  size_t n_first = prompt_ids.size();
  if (stream_prefill && n_first > 1) {
    // All but the last prompt token one step each (exact blocks), the policy evicting as it
    // goes; kvc_generate then starts from the last one.
    std::vector<float> nll(n_first - 1);
    kvc_score_options so;
    kvc_score_options_init(&so);
    so.mode = KVC_SCORE_STREAM;
    so.next_token = &prompt_ids.back();
    check(kvc_session_score(session.get(), first, n_first - 1, &so, nll.data(), nll.size()),
          "reading the prompt");
    check(kvc_sampler_accept(sampler.get(), first, n_first - 1), "sampler history");
    first += n_first - 1;
    n_first = 1;
  }
  check(kvc_generate(session.get(), sampler.get(), first, n_first, &go, nullptr, 0, &result),
        "generating");
  const auto t1 = Clock::now();
  if (stream.failed) throw RunError("writing the text to standard output failed");
  if (::isatty(STDOUT_FILENO) && !stream.text.empty() && stream.text.back() != '\n')
    std::fputc('\n', stdout);
  std::fflush(stdout);

  const kvc_cache_stats stats = cache_stats(session.get());
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const double wall_ms = ms(t1 - t0);
  const double ttft_ms = stream.first ? ms(*stream.first - t0) : 0.0;
  const int64_t n = result.n_tokens;
  const double decode_ms = stream.first ? ms(t1 - *stream.first) : 0.0;
  // The tokens after the first one, over the time after it (each one step of the model).
  const double decode_tps = n > 1 && decode_ms > 0 ? 1000.0 * static_cast<double>(n - 1) / decode_ms
                                                   : 0.0;
  std::fprintf(stderr,
               "%s: %s: %lld tokens (prompt %zu), time to first token %.1f ms, %.1f tokens/s "
               "after it; cache %lld entries per (layer, head) at most, %lld in all; stop: %s\n",
               kProgram, run.mode.c_str(), static_cast<long long>(n), prompt_ids.size(), ttft_ms,
               decode_tps, static_cast<long long>(stats.max_entries_now),
               static_cast<long long>(stats.total_entries), reason_name(result.stop_reason));

  if (json_path) {
    json config = run.params_json();
    config["positions"] = run.positions_name();
    json stop = nullptr;
    if (result.stop_reason == KVC_STOP_SEQUENCE)
      stop = stops[static_cast<size_t>(result.stop_index)];
    else if (result.stop_reason == KVC_STOP_TOKEN)
      stop = stop_tokens[static_cast<size_t>(result.stop_index)];
    json record = {
        {"program", kProgram},
        {"mode", run.mode},
        {"policy", run.policy},
        {"config", config},
        {"prompt",
         {{"source", prompt.source},
          {"prefill", stream_prefill ? "stream" : "batch"},
          {"file", prompt.file.empty() ? json(nullptr) : json(prompt.file)},
          {"text", prompt.text},
          {"num_tokens", prompt_ids.size()}}},
        {"output",
         {{"text", stream.text},
          {"tokens", stream.tokens},
          {"num_tokens", n},
          {"stop_reason", reason_name(result.stop_reason)},
          {"stop", stop}}},
        {"sampler",
         {{"temperature", sampler_options.temperature},
          {"top_k", sampler_options.top_k},
          {"top_p", sampler_options.top_p},
          {"min_p", sampler_options.min_p},
          {"repetition_penalty", sampler_options.repetition_penalty},
          {"repetition_last_n", sampler_options.repetition_last_n},
          {"seed", sampler_options.seed},
          {"max_tokens", max_tokens},
          {"stop", stops},
          {"stop_tokens", stop_tokens}}},
        {"timing",
         {{"time_to_first_token_ms", ttft_ms},
          {"decode_tokens_per_sec", decode_tps},
          {"tokens_per_sec", wall_ms > 0 ? 1000.0 * static_cast<double>(n) / wall_ms : 0.0},
          {"wall_time_s", wall_ms / 1000.0}}},
        {"cache_size",
         {{"max", stats.max_entries_now},
          {"total", stats.total_entries},
          {"capacity", stats.capacity},
          {"tokens_seen", stats.n_tokens_seen},
          {"evictions", stats.n_evictions}}},
        {"extrapolated", (unbounded || run.positions == KVC_POSITIONS_ORIGINAL) &&
                             stats.n_tokens_seen > max_pos},
        {"model", model.describe()},
        {"settings", settings_json(options)}};
    write_json(*json_path, record);
  }
  return 0;
}

}  // namespace
}  // namespace kvc::hosts

int main(int argc, char** argv) {
  return kvc::hosts::program_main(
      kvc::hosts::Program::Generate,
      "[--prompt TEXT | --prompt_file FILE | < FILE] [--mode MODE] [--max_tokens N] "
      "[options]\n\nText generation under a KV-cache policy (docs/hosts.md).",
      argc, argv, kvc::hosts::run_generate);
}
