// kvc-eval: perplexity of a model under KV-cache eviction policies (docs/policies.md §6).
//
// Each file is tokenized alone (no BOS) and fed one token per step; the NLL of token i+1 comes
// from the logits of the step that fed token i, before the policy evicts anything; the PPL is
// exp(mean NLL) over all scored tokens of all files. The baselines: chunked (the seed's 512-token
// chunks scored independently), dense (full cache, streamed) and sliding (the window recomputed
// from scratch for every scored token or every `stride` tokens).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "files.h"
#include "options.h"
#include "progress.h"
#include "report.h"
#include "runtime.h"
#include "schema.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {
namespace {

constexpr const char* kProgram = "kvc-eval";

enum class Protocol { Stream, Chunked, Dense, Sliding };

struct EvalRun {
  RunSpec spec;
  Protocol protocol = Protocol::Stream;
  std::string label;    // file name part: ppl_results_{label}.json
  std::string display;  // table name
};

struct Text {
  fs::path path;
  std::vector<int32_t> ids;
};

struct Skipped {
  fs::path path;
  std::string reason;
};

// Running sums of one file or of a whole run.
struct Tally {
  double nll_sum = 0;
  int64_t scored = 0;
  int64_t cache_max = 0;
  double cache_sum = 0;  // cache size after each scored step, summed
  int64_t extrapolated = 0;

  void add(double nll, int64_t cache_entries, bool extrapolated_step) {
    nll_sum += nll;
    ++scored;
    cache_max = std::max(cache_max, cache_entries);
    cache_sum += static_cast<double>(cache_entries);
    extrapolated += extrapolated_step ? 1 : 0;
  }
  void merge(const Tally& other) {
    nll_sum += other.nll_sum;
    scored += other.scored;
    cache_max = std::max(cache_max, other.cache_max);
    cache_sum += other.cache_sum;
    extrapolated += other.extrapolated;
  }
  double ppl() const { return scored ? std::exp(nll_sum / static_cast<double>(scored)) : NAN; }
  json cache_json() const {
    return {{"max", cache_max}, {"mean", scored ? cache_sum / static_cast<double>(scored) : 0.0}};
  }
};

struct RunResult {
  Tally total;
  std::vector<std::pair<const Text*, Tally>> files;
  double wall_s = 0;
};

// -log softmax(logits)[target], in double: the scorer's own definition of the NLL.
double nll_of(const float* logits, int32_t vocab, int32_t target) {
  float max_logit = logits[0];
  for (int32_t v = 1; v < vocab; ++v) max_logit = std::max(max_logit, logits[v]);
  double sum = 0;
  for (int32_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - max_logit);
  return std::log(sum) + max_logit - static_cast<double>(logits[target]);
}

std::vector<int32_t> tokenize(const kvc_tokenizer* tokenizer, const std::string& text,
                              const fs::path& path) {
  std::vector<int32_t> ids(text.size() / 2 + 16);
  size_t n = 0;
  kvc_status status =
      kvc_tokenize(tokenizer, text.data(), text.size(), ids.data(), ids.size(), &n);
  if (status == KVC_ERR_BUFFER_TOO_SMALL) {
    ids.resize(n);
    status = kvc_tokenize(tokenizer, text.data(), text.size(), ids.data(), ids.size(), &n);
  }
  check(status, "tokenizing '" + path.string() + "'");
  ids.resize(n);
  return ids;
}

std::string progress_detail(const Tally& tally, size_t file, size_t n_files) {
  return "ppl " + format_fixed(tally.ppl(), 3) + " file " + std::to_string(file + 1) + "/" +
         std::to_string(n_files);
}

// How many tokens of each text a run scores under the num_eval_tokens cap.
std::vector<int64_t> score_counts(const std::vector<Text>& texts, std::optional<int64_t> cap,
                                  Protocol protocol, int64_t chunk_size) {
  std::vector<int64_t> counts;
  int64_t remaining = cap.value_or(INT64_MAX);
  for (const auto& text : texts) {
    const int64_t n = static_cast<int64_t>(text.ids.size());
    // The chunked baseline never scores the first token of a chunk.
    int64_t available = protocol == Protocol::Chunked ? n - (n + chunk_size - 1) / chunk_size
                                                      : n - 1;
    int64_t take = std::min(available, remaining);
    counts.push_back(take);
    remaining -= take;
  }
  return counts;
}

RunResult run_stream(const LoadedModel& model, const EvalRun& run,
                     const std::vector<Text>& texts, const std::vector<int64_t>& counts,
                     bool continuous, int64_t total) {
  const int32_t vocab = model.info.vocab_size;
  const int64_t max_pos = model.info.max_position_embeddings;
  // The dense baseline keeps every entry: size the cache for the longest stream it will see.
  int64_t max_entries = 0;
  if (run.protocol == Protocol::Dense) {
    int64_t longest = 0, sum = 0;
    for (size_t f = 0; f < texts.size(); ++f) {
      longest = std::max(longest, counts[f]);
      sum += counts[f];
    }
    max_entries = std::max<int64_t>(1, continuous ? sum : longest);
  }
  SessionPtr session = make_session(model.model.get(), run.spec, max_entries);
  std::vector<float> logits(static_cast<size_t>(vocab));
  RunResult result;
  Progress progress(run.label, total);
  auto start = std::chrono::steady_clock::now();
  int64_t since_reset = 0;  // tokens fed since the cache was last emptied
  int64_t done = 0;
  for (size_t f = 0; f < texts.size(); ++f) {
    if (counts[f] <= 0) continue;
    if (!continuous && since_reset > 0) {
      check(kvc_session_reset(session.get()), "resetting the session");
      since_reset = 0;
    }
    const auto& ids = texts[f].ids;
    Tally tally;
    int64_t cache_before = cache_stats(session.get()).max_entries_now;
    for (int64_t i = 0; i < counts[f]; ++i) {
      const kvc_status st = kvc_session_step(session.get(), &ids[static_cast<size_t>(i)], 1,
                                             KVC_LOGITS_LAST, logits.data(), logits.size());
      // The message is built only on failure: this loop runs once per token.
      if (st != KVC_OK)
        check(st, "step " + std::to_string(i) + " of '" + texts[f].path.string() + "'");
      const double nll = nll_of(logits.data(), vocab, ids[static_cast<size_t>(i) + 1]);
      const int64_t cache_after = cache_stats(session.get()).max_entries_now;
      // The query's rotary position: its rank in the cache (shift) or its index in the text.
      const int64_t position =
          run.spec.positions == KVC_POSITIONS_SHIFT ? cache_before : since_reset;
      tally.add(nll, cache_after, position >= max_pos);
      cache_before = cache_after;
      ++since_reset;
      ++done;
      if (progress.due()) {
        Tally running = result.total;
        running.merge(tally);
        progress.update(done, progress_detail(running, f, texts.size()));
      }
    }
    result.total.merge(tally);
    result.files.emplace_back(&texts[f], tally);
  }
  result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.finish(done, "ppl " + format_fixed(result.total.ppl(), 3));
  return result;
}

RunResult run_prefill_windows(const LoadedModel& model, const EvalRun& run,
                              const std::vector<Text>& texts, const std::vector<int64_t>& counts,
                              int64_t chunk_size, int64_t window, int64_t stride, int64_t total) {
  const int64_t max_pos = model.info.max_position_embeddings;
  const bool chunked = run.protocol == Protocol::Chunked;
  SessionPtr session =
      make_session(model.model.get(), run.spec, chunked ? chunk_size : window + stride);
  kvc_score_options so;
  kvc_score_options_init(&so);
  so.mode = KVC_SCORE_PREFILL;
  std::vector<float> nll;
  RunResult result;
  Progress progress(run.label, total);
  auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  for (size_t f = 0; f < texts.size(); ++f) {
    if (counts[f] <= 0) continue;
    const auto& ids = texts[f].ids;
    const int64_t n = static_cast<int64_t>(ids.size());
    Tally tally;
    // One forward over ids[first, first + length); keeps the predictions of the tokens
    // [score_from, score_from + n_score), each made with (target - first) cached entries.
    auto score = [&](int64_t first, int64_t length, int64_t score_from, int64_t n_score) {
      check(kvc_session_reset(session.get()), "resetting the session");
      nll.resize(static_cast<size_t>(length - 1));
      check(kvc_session_score(session.get(), &ids[static_cast<size_t>(first)],
                              static_cast<size_t>(length), &so, nll.data(), nll.size()),
            "scoring tokens " + std::to_string(first) + ".." + std::to_string(first + length) +
                " of '" + texts[f].path.string() + "'");
      for (int64_t t = score_from; t < score_from + n_score; ++t) {
        const int64_t entries = t - first;  // cache entries after the step that fed t-1
        tally.add(nll[static_cast<size_t>(t - first - 1)], entries, entries - 1 >= max_pos);
      }
      done += n_score;
    };
    int64_t left = counts[f];
    if (chunked) {
      for (int64_t first = 0; first < n - 1 && left > 0; first += chunk_size) {
        const int64_t length = std::min(chunk_size, n - first);
        const int64_t n_score = std::min(length - 1, left);
        if (n_score <= 0) continue;
        score(first, n_score + 1, first + 1, n_score);
        left -= n_score;
        progress.update(done, progress_detail(tally, f, texts.size()));
      }
    } else {
      for (int64_t target = 1; target < n && left > 0;) {
        const int64_t n_score = std::min({stride, n - target, left});
        const int64_t first = std::max<int64_t>(0, target - window);
        score(first, target + n_score - first, target, n_score);
        target += n_score;
        left -= n_score;
        progress.update(done, progress_detail(tally, f, texts.size()));
      }
    }
    result.total.merge(tally);
    result.files.emplace_back(&texts[f], tally);
  }
  result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.finish(done, "ppl " + format_fixed(result.total.ppl(), 3));
  return result;
}

const char* protocol_name(Protocol p) {
  switch (p) {
    case Protocol::Chunked: return "chunked";
    case Protocol::Dense: return "dense";
    case Protocol::Sliding: return "sliding";
    default: return "stream";
  }
}

int run_eval(Options& options) {
  std::vector<std::string> warnings;
  const std::string mode = options.get_string("policy", "name");
  const std::string search_path = options.get_opt_string("policy", "search_path").value_or("");
  PolicyCatalog catalog(search_path);

  const std::string baseline = options.get_string("eval", "baseline");
  const int64_t chunk_size = options.get_int("eval", "chunk_size");
  const int64_t stride = options.get_int("eval", "stride");
  const int64_t window = options.get_opt_int("eval", "window")
                             .value_or(options.get_int("policy", "start_size") +
                                       options.get_int("policy", "recent_size"));
  if (window < 1) throw UsageError("--window: the sliding baseline needs a window >= 1");
  const bool continuous = options.get_bool("eval", "continuous_cache");

  // ---- the runs, validated before anything is loaded -----------------------------------------
  auto baseline_run = [&](Protocol protocol) {
    EvalRun run;
    run.spec = make_run(options, catalog, "baseline", false, nullptr);
    run.protocol = protocol;
    switch (protocol) {
      case Protocol::Chunked:
        run.label = "baseline";
        run.display = "baseline (" + std::to_string(chunk_size) + "-chunk)";
        break;
      case Protocol::Dense:
        run.label = "baseline_dense";
        run.display = "baseline (dense)";
        break;
      default:
        run.label = "baseline_sliding";
        run.display = "baseline (sliding " + std::to_string(window) + ", stride " +
                      std::to_string(stride) + ")";
    }
    return run;
  };
  std::vector<EvalRun> runs;
  if (mode == "all") {
    runs.push_back(baseline_run(Protocol::Chunked));
    runs.push_back(baseline_run(Protocol::Dense));
    for (const auto& name : catalog.ordered_names()) {
      if (name == "baseline") continue;
      EvalRun run;
      run.spec = make_run(options, catalog, name, false, &warnings);
      run.label = run.display = run.spec.mode;
      runs.push_back(std::move(run));
    }
  } else if (mode == "baseline") {
    runs.push_back(baseline_run(baseline == "dense"     ? Protocol::Dense
                                : baseline == "sliding" ? Protocol::Sliding
                                                        : Protocol::Chunked));
  } else {
    EvalRun run;
    run.spec = make_run(options, catalog, mode, true, &warnings);
    run.label = run.display = run.spec.mode;
    runs.push_back(std::move(run));
  }
  if (continuous && mode == "baseline" && baseline != "dense") {
    warnings.push_back("--continuous_cache does not apply to the " + baseline + " baseline");
  }
  for (const auto& w : warnings) warn(kProgram, w);

  // ---- data, model, texts -------------------------------------------------------------------
  std::string data_dir = options.get_string("eval", "data_dir");
  if (data_dir == kDefaultDataDir) data_dir = resolve_resource(data_dir).string();
  const auto files = list_text_files(data_dir);
  const uint64_t seed = static_cast<uint64_t>(options.get_int("model", "seed"));
  LoadedModel model = load_model(options, seed);
  TokenizerPtr own_tokenizer;
  const kvc_tokenizer* tokenizer = kvc_model_tokenizer(model.model.get());
  if (auto path = options.get_opt_string("model", "tokenizer")) {
    kvc_tokenizer* t = nullptr;
    check(kvc_tokenizer_load(path->c_str(), &t), "loading tokenizer '" + *path + "'");
    own_tokenizer.reset(t);
    tokenizer = t;
  }
  if (!tokenizer) {
    throw RunError("model '" + model.path + "' has no tokenizer.json; give one with --tokenizer");
  }

  const int64_t num_samples = options.get_int("eval", "num_samples");
  std::vector<Text> texts;
  std::vector<Skipped> skipped;
  for (const auto& path : files) {
    if (static_cast<int64_t>(texts.size()) >= num_samples) break;
    std::string content = read_file(path);
    std::string reason;
    if (content.empty()) {
      reason = "empty file";
    } else if (auto bad = first_invalid_utf8(content)) {
      reason = "not valid UTF-8 (byte " + std::to_string(*bad) + ")";
    }
    std::vector<int32_t> ids;
    if (reason.empty()) {
      ids = tokenize(tokenizer, content, path);
      if (ids.size() < 2) reason = "fewer than 2 tokens";
    }
    if (!reason.empty()) {
      warn(kProgram, "skipping '" + path.string() + "': " + reason);
      skipped.push_back({path, reason});
      continue;
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= model.info.vocab_size) {
        throw RunError("token id " + std::to_string(id) + " of '" + path.string() +
                       "' is outside the model's vocabulary (" +
                       std::to_string(model.info.vocab_size) +
                       "): the tokenizer does not belong to this model");
      }
    }
    texts.push_back({path, std::move(ids)});
  }
  if (texts.empty()) {
    throw RunError("no usable text in '" + data_dir + "': all " + std::to_string(skipped.size()) +
                   " .txt files were skipped");
  }
  const auto cap = options.get_opt_int("eval", "num_eval_tokens");

  // ---- runs ---------------------------------------------------------------------------------
  const fs::path output_dir = options.get_string("eval", "output_dir");
  std::vector<std::vector<std::string>> table;
  std::vector<std::string> notes;
  for (const auto& run : runs) {
    const auto counts = score_counts(texts, cap, run.protocol, chunk_size);
    int64_t total = 0;
    for (auto c : counts) total += c;
    RunResult result =
        run.protocol == Protocol::Stream || run.protocol == Protocol::Dense
            ? run_stream(model, run, texts, counts, continuous, total)
            : run_prefill_windows(model, run, texts, counts, chunk_size, window, stride, total);

    json config = run.spec.params_json();
    if (run.protocol == Protocol::Chunked) config["chunk_size"] = chunk_size;
    if (run.protocol == Protocol::Sliding) {
      config["window"] = window;
      config["stride"] = stride;
    }
    json per_file = json::array();
    for (const auto& [text, tally] : result.files) {
      per_file.push_back({{"file", text->path.filename().string()},
                          {"path", text->path.string()},
                          {"num_tokens", tally.scored},
                          {"ppl", tally.ppl()},
                          {"nll_sum", tally.nll_sum},
                          {"cache_size", tally.cache_json()},
                          {"extrapolated_tokens", tally.extrapolated}});
    }
    json skipped_json = json::array();
    for (const auto& s : skipped) {
      skipped_json.push_back({{"file", s.path.string()}, {"reason", s.reason}});
    }
    const double tokens_per_sec =
        result.wall_s > 0 ? static_cast<double>(result.total.scored) / result.wall_s : 0.0;
    json out = {
        {"mode", run.label},
        {"ppl", result.total.ppl()},
        {"num_tokens", result.total.scored},
        {"num_samples", result.files.size()},
        {"config", config},
        {"policy", run.spec.policy},
        {"protocol", protocol_name(run.protocol)},
        {"positions", run.spec.positions_name()},
        {"continuous_cache",
         continuous && (run.protocol == Protocol::Stream || run.protocol == Protocol::Dense)},
        {"num_eval_tokens", cap ? json(*cap) : json(nullptr)},
        {"data_dir", data_dir},
        {"cache_size", result.total.cache_json()},
        {"extrapolated_tokens", result.total.extrapolated},
        {"tokens_per_sec", tokens_per_sec},
        {"wall_time_s", result.wall_s},
        {"model", model.describe()},
        {"skipped_files", skipped_json},
        {"num_skipped_files", skipped.size()},
        {"files", per_file},
        {"settings", settings_json(options)},
    };
    const fs::path path = output_dir / ("ppl_results_" + run.label + ".json");
    write_json(path, out);
    std::printf("%s: ppl %.4f over %lld tokens (%zu files), cache max %lld mean %.1f, "
                "%.1f tok/s -> %s\n",
                run.display.c_str(), result.total.ppl(),
                static_cast<long long>(result.total.scored), result.files.size(),
                static_cast<long long>(result.total.cache_max),
                result.total.scored ? result.total.cache_sum / result.total.scored : 0.0,
                tokens_per_sec, path.string().c_str());
    std::fflush(stdout);
    table.push_back({run.display, format_fixed(result.total.ppl(), 3),
                     std::to_string(result.total.cache_max),
                     format_fixed(result.total.scored
                                      ? result.total.cache_sum / result.total.scored
                                      : 0.0,
                                  1),
                     format_fixed(tokens_per_sec, 1)});
    if (result.total.extrapolated > 0) {
      notes.push_back(run.display + ": " + std::to_string(result.total.extrapolated) + " of " +
                      std::to_string(result.total.scored) + " scored tokens were predicted at "
                      "positions >= max_position_embeddings (" +
                      std::to_string(model.info.max_position_embeddings) + "): extrapolation");
    }
  }
  if (mode == "all") {
    std::string md = markdown_table({"Method", "PPL", "Cache max", "Cache mean", "Tokens/s"},
                                    table);
    for (const auto& note : notes) md += "\n- " + note;
    if (!notes.empty()) md += "\n";
    const fs::path path = output_dir / "ppl_results_table.md";
    write_file_atomic(path, md);
    std::printf("\n%s\n(table written to %s)\n", md.c_str(), path.string().c_str());
  } else {
    for (const auto& note : notes) std::printf("note: %s\n", note.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvc::hosts

int main(int argc, char** argv) {
  using namespace kvc::hosts;
  return guarded_main(kProgram, [&]() {
    Options options = make_options(Program::Eval);
    if (list_policies_if_asked(options, argc, argv)) return 0;
    if (!options.parse(argc, argv)) {
      std::fputs(options.help_text("[--mode MODE] [options]\n\nPerplexity of a model under a "
                                   "KV-cache policy (docs/hosts.md). --list_policies lists the "
                                   "installed policies and their parameters.")
                     .c_str(),
                 stdout);
      return 0;
    }
    return run_eval(options);
  });
}
