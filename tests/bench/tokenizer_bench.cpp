// Tokenizer speed: MB/s encoding (and decoding) the whole KJV text on one thread with the
// GPT-NeoX-20B tokenizer. Compare with `tokenizers` via
//   RAYON_NUM_THREADS=1 python tools/reference/make_tokenizer_golden.py bench --tokenizer ...
// The text comes from `bible Gen1:1-Rev22:21` (Debian bible-kjv), or from the file named by
// KVC_BENCH_TEXT; the tokenizer from KVC_BENCH_TOKENIZER or ../shared/data.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>

#include "../tokenizer/test_support.h"
#include "tokenizer/tokenizer.h"

namespace {

struct Inputs {
  std::unique_ptr<kvc::Tokenizer> tokenizer;
  std::string text;
  std::string error;
};

const Inputs& inputs() {
  static const Inputs in = [] {
    Inputs r;
    const char* tok_env = std::getenv("KVC_BENCH_TOKENIZER");
    const std::filesystem::path tok_path =
        tok_env ? std::filesystem::path(tok_env) : kvc::test::neox_tokenizer_path();
    if (!std::filesystem::exists(tok_path)) {
      r.error = "tokenizer not found: " + tok_path.string();
      return r;
    }
    r.tokenizer = kvc::Tokenizer::load_file(tok_path.string());
    if (const char* text_env = std::getenv("KVC_BENCH_TEXT")) {
      r.text = kvc::test::read_file(text_env);
    } else if (auto kjv = kvc::test::kjv_text()) {
      r.text = std::move(*kjv);
    } else {
      r.error = "no text: install bible-kjv or set KVC_BENCH_TEXT";
    }
    return r;
  }();
  return in;
}

// Steady state: the per-thread word cache is warm, as in a long-running process (the
// `tokenizers` numbers are taken the same way, after one warm-up encode).
void BM_EncodeKjv(benchmark::State& state) {
  const Inputs& in = inputs();
  if (!in.error.empty()) return state.SkipWithError(in.error.c_str());
  size_t n_ids = in.tokenizer->encode(in.text).size();
  for (auto _ : state) {
    auto ids = in.tokenizer->encode(in.text);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.text.size()));
  state.counters["ids"] = static_cast<double>(n_ids);
}

// First encode by a fresh tokenizer: the cache starts empty (includes no load time).
void BM_EncodeKjvColdCache(benchmark::State& state) {
  const Inputs& in = inputs();
  if (!in.error.empty()) return state.SkipWithError(in.error.c_str());
  const char* tok_env = std::getenv("KVC_BENCH_TOKENIZER");
  const std::string path = tok_env ? tok_env : kvc::test::neox_tokenizer_path().string();
  for (auto _ : state) {
    state.PauseTiming();
    auto fresh = kvc::Tokenizer::load_file(path);
    state.ResumeTiming();
    auto ids = fresh->encode(in.text);
    benchmark::DoNotOptimize(ids.data());
    state.PauseTiming();
    fresh.reset();
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.text.size()));
}

void BM_DecodeKjv(benchmark::State& state) {
  const Inputs& in = inputs();
  if (!in.error.empty()) return state.SkipWithError(in.error.c_str());
  const std::vector<int32_t> ids = in.tokenizer->encode(in.text);
  for (auto _ : state) {
    std::string text = in.tokenizer->decode(ids);
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.text.size()));
}

void BM_LoadTokenizer(benchmark::State& state) {
  const char* tok_env = std::getenv("KVC_BENCH_TOKENIZER");
  const std::string path = tok_env ? tok_env : kvc::test::neox_tokenizer_path().string();
  if (!std::filesystem::exists(path)) return state.SkipWithError("tokenizer not found");
  for (auto _ : state) benchmark::DoNotOptimize(kvc::Tokenizer::load_file(path).get());
}

BENCHMARK(BM_EncodeKjv)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_EncodeKjvColdCache)->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK(BM_DecodeKjv)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LoadTokenizer)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
