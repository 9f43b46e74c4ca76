#include "scoring.h"

#include <algorithm>
#include <chrono>

#include "progress.h"
#include "report.h"

namespace kvc::hosts {

namespace {

std::string progress_detail(const Tally& tally, size_t file, size_t n_files) {
  return "ppl " + format_fixed(tally.ppl(), 3) + " file " + std::to_string(file + 1) + "/" +
         std::to_string(n_files);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Tokens per kvc_session_score call of the streamed protocols: progress is reported between
// calls (the library scores each call in blocks of ProtocolSettings::block_size).
constexpr int64_t kTokensPerCall = 1024;

void take_report(kvc_session* session, RunResult& result) {
  kvc_score_report r;
  kvc_score_report_init(&r);
  check(kvc_session_score_report(session, &r), "reading the score report");
  result.block_size = r.block_size;
  result.path = r.path;
  result.path_reason = r.reason;
}

RunResult run_stream(const LoadedModel& model, const EvalRun& run, const std::vector<Text>& texts,
                     const std::vector<int64_t>& counts, const ProtocolSettings& settings,
                     int64_t total, const TokenSink& sink) {
  const int64_t max_pos = model.info.max_position_embeddings;
  // The dense baseline keeps every entry: size the cache for the longest stream it will see.
  int64_t max_entries = 0;
  if (run.protocol == Protocol::Dense) {
    int64_t longest = 0, sum = 0;
    for (size_t f = 0; f < texts.size(); ++f) {
      longest = std::max(longest, counts[f]);
      sum += counts[f];
    }
    max_entries = std::max<int64_t>(1, settings.continuous ? sum : longest);
  }
  SessionPtr session = make_session(model.model.get(), run.spec, max_entries);
  std::vector<float> nll(static_cast<size_t>(kTokensPerCall));
  std::vector<int64_t> entries(static_cast<size_t>(kTokensPerCall));
  RunResult result;
  Progress progress(run.label, total);
  const auto start = std::chrono::steady_clock::now();
  int64_t since_reset = 0;  // tokens fed since the cache was last emptied
  int64_t cache_before = 0;  // most entries in a (layer, head) before the next step
  int64_t done = 0;
  for (size_t f = 0; f < texts.size(); ++f) {
    if (counts[f] <= 0) continue;
    if (!settings.continuous && since_reset > 0) {
      check(kvc_session_reset(session.get()), "resetting the session");
      since_reset = 0;
      cache_before = 0;
    }
    const auto& ids = texts[f].ids;
    Tally tally;
    for (int64_t off = 0; off < counts[f]; off += kTokensPerCall) {
      const int64_t m = std::min(kTokensPerCall, counts[f] - off);
      kvc_score_options so;
      kvc_score_options_init(&so);
      so.block_size = settings.block_size;
      so.cache_entries = entries.data();
      so.next_token = &ids[static_cast<size_t>(off + m)];  // counts[f] <= ids.size() - 1
      check(kvc_session_score(session.get(), &ids[static_cast<size_t>(off)],
                              static_cast<size_t>(m), &so, nll.data(), nll.size()),
            "scoring tokens " + std::to_string(off) + ".." + std::to_string(off + m) + " of '" +
                texts[f].path.string() + "'");
      for (int64_t i = 0; i < m; ++i) {
        TokenRecord r;
        r.file = f;
        r.position = off + i + 1;
        r.token = ids[static_cast<size_t>(off + i + 1)];
        r.nll = nll[static_cast<size_t>(i)];
        r.cache = entries[static_cast<size_t>(i)];
        // The query's rotary position: its rank in the cache (shift) or its index in the text.
        const int64_t rotary =
            run.spec.positions == KVC_POSITIONS_SHIFT ? cache_before : since_reset;
        r.extrapolated = rotary >= max_pos;
        tally.add(r);
        if (sink) sink(r);
        cache_before = r.cache;
        ++since_reset;
      }
      done += m;
      Tally running = result.total;
      running.merge(tally);
      progress.update(done, progress_detail(running, f, texts.size()));
    }
    result.total.merge(tally);
    result.files.emplace_back(f, tally);
  }
  take_report(session.get(), result);
  result.wall_s = seconds_since(start);
  progress.finish(done, "ppl " + format_fixed(result.total.ppl(), 3));
  return result;
}

RunResult run_prefill_windows(const LoadedModel& model, const EvalRun& run,
                              const std::vector<Text>& texts, const std::vector<int64_t>& counts,
                              const ProtocolSettings& settings, int64_t total,
                              const TokenSink& sink) {
  const int64_t max_pos = model.info.max_position_embeddings;
  const bool chunked = run.protocol == Protocol::Chunked;
  const int64_t chunk_size = settings.chunk_size, window = settings.window,
                stride = settings.stride;
  SessionPtr session =
      make_session(model.model.get(), run.spec, chunked ? chunk_size : window + stride);
  kvc_score_options so;
  kvc_score_options_init(&so);
  so.mode = KVC_SCORE_PREFILL;
  std::vector<float> nll;
  RunResult result;
  Progress progress(run.label, total);
  const auto start = std::chrono::steady_clock::now();
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
        TokenRecord r;
        r.file = f;
        r.position = t;
        r.token = ids[static_cast<size_t>(t)];
        r.nll = nll[static_cast<size_t>(t - first - 1)];
        r.cache = t - first;  // cache entries after the step that fed t-1
        r.extrapolated = r.cache - 1 >= max_pos;
        tally.add(r);
        if (sink) sink(r);
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
    result.files.emplace_back(f, tally);
  }
  take_report(session.get(), result);
  result.wall_s = seconds_since(start);
  progress.finish(done, "ppl " + format_fixed(result.total.ppl(), 3));
  return result;
}

}  // namespace

const char* protocol_name(Protocol p) {
  switch (p) {
    case Protocol::Chunked: return "chunked";
    case Protocol::Dense: return "dense";
    case Protocol::Sliding: return "sliding";
    default: return "stream";
  }
}

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

RunResult score_run(const LoadedModel& model, const EvalRun& run, const std::vector<Text>& texts,
                    const std::vector<int64_t>& counts, const ProtocolSettings& settings,
                    const TokenSink& sink) {
  int64_t total = 0;
  for (auto c : counts) total += c;
  if (run.protocol == Protocol::Stream || run.protocol == Protocol::Dense)
    return run_stream(model, run, texts, counts, settings, total, sink);
  return run_prefill_windows(model, run, texts, counts, settings, total, sink);
}

}  // namespace kvc::hosts
