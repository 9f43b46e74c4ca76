#include "scoring.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "interrupt.h"
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

// Each kvc_session_score call of the streamed protocols feeds one block (or less, to stop at a
// trace point or the end of a file). The block boundaries then depend only on the text, never on
// timing, so a file scores to the same bits in every run, alone or in a shard (--shard), and
// progress, Ctrl-C and trace points are timely. Calls are cheap; the forward pass dominates.
// How the library scored, over the calls so far: the largest block (the calls at the end of a
// file are shorter), and the path of the last call.
void take_report(kvc_session* session, RunResult& result) {
  kvc_score_report r;
  kvc_score_report_init(&r);
  check(kvc_session_score_report(session, &r), "reading the score report");
  result.block_size = std::max(result.block_size, r.block_size);
  result.path = r.path;
  result.path_reason = r.reason;
}

// The run's policy as the library runs it, announced on stderr and kept for the result.
void take_policy_report(kvc_session* session, const EvalRun& run, const ScoreHooks& hooks,
                        RunResult& result) {
  result.policy_report = policy_report(session);
  if (!hooks.program.empty())
    std::fprintf(stderr, "%s: %s: %s\n", hooks.program.c_str(), run.label.c_str(),
                 variant_summary(result.policy_report, run.spec).c_str());
}

// KL(dense || policy) of two logit rows and whether their top tokens agree.
void compare_rows(const float* dense, const float* policy, int64_t vocab, double* kl, int* top1) {
  auto log_sum_exp = [vocab](const float* row, int64_t* argmax) {
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (row[v] > row[best]) best = v;
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - row[best]));
    *argmax = best;
    return static_cast<double>(row[best]) + std::log(sum);
  };
  int64_t top_dense = 0, top_policy = 0;
  const double lse_d = log_sum_exp(dense, &top_dense), lse_p = log_sum_exp(policy, &top_policy);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double log_d = dense[v] - lse_d, log_p = policy[v] - lse_p;
    sum += std::exp(log_d) * (log_d - log_p);
  }
  *kl = std::max(0.0, sum);  // rounding can leave a tiny negative for identical rows
  *top1 = top_dense == top_policy ? 1 : 0;
}

// Entries the longest stream of the run would hold under the full cache.
int64_t full_cache_entries(const std::vector<int64_t>& counts, bool continuous) {
  int64_t longest = 0, sum = 0;
  for (int64_t c : counts) {
    longest = std::max(longest, c);
    sum += c;
  }
  return std::max<int64_t>(1, continuous ? sum : longest);
}

RunResult run_stream(const LoadedModel& model, const EvalRun& run, const std::vector<Text>& texts,
                     const std::vector<int64_t>& counts, const ProtocolSettings& settings,
                     int64_t total, const ScoreHooks& hooks) {
  const int64_t max_pos = model.info.max_position_embeddings;
  const int64_t vocab = model.info.vocab_size;
  const int64_t full = full_cache_entries(counts, settings.continuous);
  SessionPtr session =
      make_session(model.model.get(), run.spec, run.protocol == Protocol::Dense ? full : 0);
  RunResult result;
  take_policy_report(session.get(), run, hooks, result);
  // The full-cache session of --compare_to, fed the same tokens.
  SessionPtr dense;
  if (hooks.compare_to && run.protocol == Protocol::Stream)
    dense = make_session(model.model.get(), *hooks.compare_to, full);
  const int64_t block = settings.block_size > 0 ? settings.block_size : KVC_DEFAULT_BLOCK_SIZE;
  std::vector<float> nll, dense_nll, logits, dense_logits;
  std::vector<int64_t> entries, evicted;
  Progress progress(run.label, total);
  const auto start = std::chrono::steady_clock::now();
  int64_t since_reset = 0;   // tokens fed since the cache was last emptied
  int64_t cache_before = 0;  // most entries in a (layer, head) before the next step
  int64_t done = 0;
  for (size_t f = 0; f < texts.size() && !result.interrupted; ++f) {
    if (counts[f] <= 0) continue;
    if (!settings.continuous && since_reset > 0) {
      check(kvc_session_reset(session.get()), "resetting the session");
      if (dense) check(kvc_session_reset(dense.get()), "resetting the full-cache session");
      since_reset = 0;
      cache_before = 0;
    }
    const auto& ids = texts[f].ids;
    Tally tally;
    for (int64_t off = 0; off < counts[f];) {
      int64_t m = std::min(block, counts[f] - off);
      if (hooks.trace_every > 0)
        m = std::min(m, hooks.trace_every - since_reset % hooks.trace_every);
      const auto n = static_cast<size_t>(m);
      nll.resize(n);
      entries.resize(n);
      evicted.resize(n);
      kvc_score_options so;
      kvc_score_options_init(&so);
      so.block_size = settings.block_size;
      so.cache_entries = entries.data();
      so.evicted = evicted.data();
      so.next_token = &ids[static_cast<size_t>(off + m)];  // counts[f] <= ids.size() - 1
      if (dense) {
        logits.resize(n * static_cast<size_t>(vocab));
        so.logits = logits.data();
        so.logits_capacity = logits.size();
      }
      const std::string what = "tokens " + std::to_string(off) + ".." +
                               std::to_string(off + m) + " of '" + texts[f].path.string() + "'";
      check(kvc_session_score(session.get(), &ids[static_cast<size_t>(off)], n, &so, nll.data(),
                              nll.size()),
            "scoring " + what);
      take_report(session.get(), result);
      if (dense) {
        kvc_score_options ds;
        kvc_score_options_init(&ds);
        ds.block_size = settings.block_size;
        ds.next_token = so.next_token;
        dense_logits.resize(logits.size());
        ds.logits = dense_logits.data();
        ds.logits_capacity = dense_logits.size();
        dense_nll.resize(n);
        check(kvc_session_score(dense.get(), &ids[static_cast<size_t>(off)], n, &ds,
                                dense_nll.data(), dense_nll.size()),
              "scoring " + what + " with the full cache");
      }
      for (int64_t i = 0; i < m; ++i) {
        const auto k = static_cast<size_t>(i);
        TokenRecord r;
        r.file = f;
        r.position = off + i + 1;
        r.token = ids[static_cast<size_t>(off + i + 1)];
        r.nll = nll[k];
        r.cache = entries[k];
        r.evicted = evicted[k];
        // The query's rotary position: its rank in the cache (shift) or its index in the text.
        const int64_t rotary =
            run.spec.positions == KVC_POSITIONS_SHIFT ? cache_before : since_reset + i;
        r.extrapolated = rotary >= max_pos;
        if (dense)
          compare_rows(&dense_logits[k * static_cast<size_t>(vocab)],
                       &logits[k * static_cast<size_t>(vocab)], vocab, &r.kl, &r.top1);
        tally.add(r);
        if (hooks.sink) hooks.sink(r);
        cache_before = r.cache;
      }
      off += m;
      since_reset += m;
      done += m;
      if (hooks.trace_every > 0 && since_reset % hooks.trace_every == 0 && hooks.on_trace)
        hooks.on_trace(session.get(), f, since_reset);
      if (interrupted()) result.interrupted = true;
      if (progress.due() || result.interrupted) {
        Tally running = result.total;
        running.merge(tally);
        progress.update(done, progress_detail(running, f, texts.size()));
      }
      if (result.interrupted) break;
    }
    result.total.merge(tally);
    result.files.emplace_back(f, tally);
  }
  result.wall_s = seconds_since(start);
  progress.finish(done, "ppl " + format_fixed(result.total.ppl(), 3) +
                            (result.interrupted ? " (interrupted)" : ""));
  return result;
}

RunResult run_prefill_windows(const LoadedModel& model, const EvalRun& run,
                              const std::vector<Text>& texts, const std::vector<int64_t>& counts,
                              const ProtocolSettings& settings, int64_t total,
                              const ScoreHooks& hooks) {
  const int64_t max_pos = model.info.max_position_embeddings;
  const bool chunked = run.protocol == Protocol::Chunked;
  const int64_t chunk_size = settings.chunk_size, window = settings.window,
                stride = settings.stride;
  SessionPtr session =
      make_session(model.model.get(), run.spec, chunked ? chunk_size : window + stride);
  RunResult result;
  take_policy_report(session.get(), run, hooks, result);
  kvc_score_options so;
  kvc_score_options_init(&so);
  so.mode = KVC_SCORE_PREFILL;
  std::vector<float> nll;
  Progress progress(run.label, total);
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  for (size_t f = 0; f < texts.size() && !result.interrupted; ++f) {
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
      take_report(session.get(), result);
      for (int64_t t = score_from; t < score_from + n_score; ++t) {
        TokenRecord r;
        r.file = f;
        r.position = t;
        r.token = ids[static_cast<size_t>(t)];
        r.nll = nll[static_cast<size_t>(t - first - 1)];
        r.cache = t - first;  // cache entries after the step that fed t-1
        r.extrapolated = r.cache - 1 >= max_pos;
        tally.add(r);
        if (hooks.sink) hooks.sink(r);
      }
      done += n_score;
      if (interrupted()) result.interrupted = true;
    };
    int64_t left = counts[f];
    if (chunked) {
      for (int64_t first = 0; first < n - 1 && left > 0 && !result.interrupted;
           first += chunk_size) {
        const int64_t length = std::min(chunk_size, n - first);
        const int64_t n_score = std::min(length - 1, left);
        if (n_score <= 0) continue;
        score(first, n_score + 1, first + 1, n_score);
        left -= n_score;
        progress.update(done, progress_detail(tally, f, texts.size()));
      }
    } else {
      for (int64_t target = 1; target < n && left > 0 && !result.interrupted;) {
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
  result.wall_s = seconds_since(start);
  progress.finish(done, "ppl " + format_fixed(result.total.ppl(), 3) +
                            (result.interrupted ? " (interrupted)" : ""));
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
                    const ScoreHooks& hooks) {
  int64_t total = 0;
  for (auto c : counts) total += c;
  if (run.protocol == Protocol::Stream || run.protocol == Protocol::Dense)
    return run_stream(model, run, texts, counts, settings, total, hooks);
  return run_prefill_windows(model, run, texts, counts, settings, total, hooks);
}

}  // namespace kvc::hosts
