// Decode latency of whole models on the CPU, through the public C ABI (Google Benchmark).
//
//   build/release/bin/kvc_decode_bench --benchmark_filter='pythia-410m/bf16/threads:2'
//
// Each iteration decodes one token after a short prefill; the cache stays small so the
// number is dominated by reading the weights (compare with weight bytes / read bandwidth).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvc/kvc.h"

namespace {

void check(kvc_status st) {
  if (st != KVC_OK) {
    std::fprintf(stderr, "kvc: %s\n", kvc_last_error());
    std::exit(1);
  }
}

void BM_Decode(benchmark::State& state, const char* model_name, kvc_dtype dtype) {
  kvc_model_options o;
  kvc_model_options_init(&o);
  o.weight_dtype = dtype;
  o.n_threads = static_cast<int32_t>(state.range(0));
  o.seed = 1;
  kvc_model* model = nullptr;
  check(kvc_model_load(model_name, &o, &model));
  kvc_model_info info;
  kvc_model_info_init(&info);
  check(kvc_model_get_info(model, &info));
  kvc_session* session = nullptr;
  check(kvc_session_create(model, nullptr, &session));
  std::vector<int32_t> prompt(32);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(100 + 37 * i);
  check(kvc_session_step(session, prompt.data(), prompt.size(), KVC_LOGITS_NONE, nullptr, 0));
  std::vector<float> logits(static_cast<size_t>(info.vocab_size));
  int32_t token = 1000;
  int64_t fed = 0;
  for (auto _ : state) {
    check(kvc_session_step(session, &token, 1, KVC_LOGITS_LAST, logits.data(), logits.size()));
    token = (token * 31 + 7) % (info.vocab_size - 200) + 100;
    if (++fed % 256 == 0) {  // keep the cache short: the benchmark measures the weights' cost
      state.PauseTiming();
      check(kvc_session_reset(session));
      check(kvc_session_step(session, prompt.data(), prompt.size(), KVC_LOGITS_NONE, nullptr, 0));
      state.ResumeTiming();
    }
  }
  state.counters["weight_GB"] = static_cast<double>(info.weight_bytes) / 1e9;
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(info.weight_bytes) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  kvc_session_free(session);
  kvc_model_free(model);
}

// Registered by hand so that the names read "BM_Decode/pythia-410m/bf16/threads:1".
const int kRegistered = [] {
  const struct {
    const char* model;
    const char* tag;
    kvc_dtype dtype;
  } cases[] = {{"pythia-160m", "f32", KVC_DTYPE_F32}, {"pythia-160m", "bf16", KVC_DTYPE_BF16},
               {"pythia-410m", "f32", KVC_DTYPE_F32}, {"pythia-410m", "bf16", KVC_DTYPE_BF16},
               {"pythia-1b", "f32", KVC_DTYPE_F32},   {"pythia-1b", "bf16", KVC_DTYPE_BF16}};
  for (const auto& c : cases) {
    const std::string name = std::string("BM_Decode/") + c.model + "/" + c.tag;
    const std::string source = std::string("synthetic:") + c.model;
    const kvc_dtype dtype = c.dtype;
    benchmark::RegisterBenchmark(name.c_str(),
                                 [source, dtype](benchmark::State& state) {
                                   BM_Decode(state, source.c_str(), dtype);
                                 })
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(2.0)
        ->UseRealTime();
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
