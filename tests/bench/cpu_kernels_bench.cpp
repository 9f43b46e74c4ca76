// CPU kernel benchmarks: memory read bandwidth, decode matvec at Pythia shapes, prefill GEMM.
//
// Decode reads every weight once per token and the model does not fit in cache, so the matvec
// benchmark walks through a large arena (default 1 GiB, above this machine's L3; override with
// KVC_BENCH_ARENA_MIB) and takes the next cold copy of the matrix on every iteration. Its
// bytes_per_second is weight bytes streamed per second, directly comparable with ReadBandwidth,
// which sums the same arena with the same threads.
//
//   cpu_kernels_bench --benchmark_filter='ReadBandwidth|Matvec' --benchmark_min_time=0.3
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cpu/matmul.h"
#include "cpu/thread_pool.h"

namespace {

using kvc::DType;
using kvc::Matrix;
using kvc::cpu::ThreadPool;

ThreadPool& pool_for(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

// A large buffer of small normal numbers, valid as f32, bf16 and f16 (0x3cXX halves).
struct Arena {
  uint8_t* data = nullptr;
  size_t bytes = 0;
  size_t cursor = 0;

  static Arena& get() {
    static Arena a = [] {
      Arena r;
      const char* env = std::getenv("KVC_BENCH_ARENA_MIB");
      r.bytes = static_cast<size_t>((env ? std::atof(env) : 1024.0) * (1 << 20)) / 64 * 64;
      r.data = static_cast<uint8_t*>(std::aligned_alloc(64, r.bytes));
      auto* h = reinterpret_cast<uint16_t*>(r.data);
      for (size_t i = 0; i < r.bytes / 2; ++i) h[i] = static_cast<uint16_t>(0x3c00 + (i & 0xff));
      return r;
    }();
    return a;
  }
  // Next `n` bytes (64-byte aligned), wrapping around; consecutive calls never share lines.
  const void* next(size_t n) {
    n = (n + 63) / 64 * 64;
    if (n > bytes) {
      std::fprintf(stderr, "KVC_BENCH_ARENA_MIB too small: need %zu bytes\n", n);
      std::exit(2);
    }
    if (cursor + n > bytes) cursor = 0;
    const void* p = data + cursor;
    cursor += n;
    return p;
  }
};

// Plain streaming read: the arena's words are small normal floats, so a dot product of a block
// with itself reads every byte once (the second operand hits L1) with the best SIMD target.
float read_range(const void* p, size_t bytes) {
  const auto* f = static_cast<const float*>(p);
  return kvc::cpu::dot_f32(f, f, static_cast<int64_t>(bytes / 4));
}

void ReadBandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  Arena& arena = Arena::get();
  ThreadPool& pool = pool_for(threads);
  constexpr size_t kBlock = 64 << 10;
  std::vector<float> partial(static_cast<size_t>(threads));
  for (auto _ : state) {
    pool.parallel_for(static_cast<int64_t>(arena.bytes / kBlock), [&](int64_t b, int64_t e, int t) {
      partial[t] = read_range(arena.data + b * kBlock, static_cast<size_t>(e - b) * kBlock);
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * arena.bytes));
}
BENCHMARK(ReadBandwidth)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

// Pythia matrices for hidden size h: per layer 0 qkv [3h, h], 1 dense [h, h], 2 fc_in [4h, h],
// 3 fc_out [h, 4h]; once per token 4 embed_out [50304, h] (the logits).
void shape_of(int64_t h, int64_t which, int64_t& rows, int64_t& cols) {
  const int64_t r[5] = {3 * h, h, 4 * h, h, 50304}, c[5] = {h, h, h, 4 * h, h};
  rows = r[which];
  cols = c[which];
}
const char* kMatrixNames[5] = {"qkv", "dense", "fc_in", "fc_out", "embed_out"};
const char* kDtypeNames[3] = {"f32", "bf16", "f16"};

// Args: hidden, matrix (0..3), dtype (0 f32, 1 bf16, 2 f16), threads, bf16 activations (0/1).
void Matvec(benchmark::State& state) {
  const int64_t h = state.range(0), which = state.range(1);
  const auto dtype = static_cast<DType>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const bool fast = state.range(4) != 0;
  if (fast && !kvc::cpu::has_native_bf16()) {
    state.SkipWithError("no AVX512_BF16 on this CPU");
    return;
  }
  int64_t rows, cols;
  shape_of(h, which, rows, cols);
  Matrix w{dtype, rows, cols, nullptr};
  Arena& arena = Arena::get();
  ThreadPool& pool = pool_for(threads);
  std::vector<float> x(static_cast<size_t>(cols), 0.01f), bias(static_cast<size_t>(rows), 0.5f);
  std::vector<float> y(static_cast<size_t>(rows));
  // Each iteration also reads a different cold block of the same size with the same threads,
  // untimed by the framework: its rate is the read bandwidth under the same conditions (the
  // machine may be shared), and `vs_read` = matvec GB/s / that read GB/s (1.0 = at bandwidth).
  std::vector<float> partial(static_cast<size_t>(threads));
  double matvec_s = 0, read_s = 0;
  for (auto _ : state) {
    w.data = arena.next(w.bytes());
    const auto t0 = std::chrono::steady_clock::now();
    kvc::cpu::matmul(x.data(), 1, w, bias.data(), y.data(), pool, fast);
    const auto t1 = std::chrono::steady_clock::now();
    const auto* r = static_cast<const uint8_t*>(arena.next(w.bytes()));
    const int64_t bytes = static_cast<int64_t>(w.bytes());
    pool.parallel_for((bytes + 4095) / 4096, [&](int64_t b, int64_t e, int t) {
      const int64_t end = std::min(bytes, e * 4096);
      partial[t] = read_range(r + b * 4096, static_cast<size_t>(end - b * 4096));
    });
    benchmark::DoNotOptimize(partial.data());
    const auto t2 = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(dt);
    matvec_s += dt;
    read_s += std::chrono::duration<double>(t2 - t1).count();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * w.bytes()));
  const double total = static_cast<double>(state.iterations() * w.bytes());
  state.counters["read_GB/s"] = total / read_s * 1e-9;
  state.counters["vs_read"] = read_s / matvec_s;
  state.SetLabel(std::string(kMatrixNames[which]) + " " + std::to_string(rows) + "x" +
                 std::to_string(cols) + " " + kDtypeNames[state.range(2)] +
                 (fast ? " bf16-acts" : "") + " " + kvc::cpu::simd_target_name());
}

void MatvecArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"h", "m", "dtype", "threads", "bf16acts"});
  for (int64_t h : {768, 1024, 2048, 2560})
    for (int64_t m = 0; m < 5; ++m)
      for (int64_t dt = 0; dt < 3; ++dt)
        for (int64_t threads : {1, 2}) {
          b->Args({h, m, dt, threads, 0});
          if (dt == 1) b->Args({h, m, dt, threads, 1});
        }
}
BENCHMARK(Matvec)->Apply(MatvecArgs)->UseManualTime();

// Prefill: fc_in [4h, h] applied to n tokens. Args: hidden, tokens, dtype, threads, bf16 acts.
void Gemm(benchmark::State& state) {
  const int64_t h = state.range(0), n = state.range(1);
  const auto dtype = static_cast<DType>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const bool fast = state.range(4) != 0;
  if (fast && !kvc::cpu::has_native_bf16()) {
    state.SkipWithError("no AVX512_BF16 on this CPU");
    return;
  }
  const int64_t rows = 4 * h, cols = h;
  Matrix w{dtype, rows, cols, Arena::get().next(static_cast<size_t>(rows * cols) * 4)};
  ThreadPool& pool = pool_for(threads);
  std::vector<float> x(static_cast<size_t>(n * cols), 0.01f), y(static_cast<size_t>(n * rows));
  for (auto _ : state) {
    kvc::cpu::matmul(x.data(), n, w, nullptr, y.data(), pool, fast);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(rows * cols * n) * static_cast<double>(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kDtypeNames[state.range(2)]) + (fast ? " bf16-acts" : ""));
}

void GemmArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"h", "tokens", "dtype", "threads", "bf16acts"});
  for (int64_t h : {1024, 2048})
    for (int64_t n : {8, 128})
      for (int64_t dt = 0; dt < 3; ++dt)
        for (int64_t threads : {1, 2}) {
          b->Args({h, n, dt, threads, 0});
          if (dt == 1) b->Args({h, n, dt, threads, 1});
        }
}
BENCHMARK(Gemm)->Apply(GemmArgs)->UseRealTime();

// Fork-join round trip of the pool with an empty task (the fixed cost of every parallel matmul).
void ParallelForOverhead(benchmark::State& state) {
  ThreadPool& pool = pool_for(static_cast<int>(state.range(0)));
  std::vector<int64_t> sink(static_cast<size_t>(pool.size()));
  for (auto _ : state) {
    pool.parallel_for(pool.size(), [&](int64_t b, int64_t, int t) { sink[t] = b; });
  }
  benchmark::DoNotOptimize(sink.data());
}
BENCHMARK(ParallelForOverhead)->ArgName("threads")->Arg(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
