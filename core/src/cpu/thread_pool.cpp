#include "cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "common/error.h"

namespace kvc::cpu {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long an idle thread polls before blocking. Long enough to bridge the gap between two
// matmuls of one layer (norms, attention), short enough not to burn a core between tokens.
constexpr auto kSpinTime = std::chrono::microseconds(100);

// Returns once `value` differs from `old`: polls for kSpinTime, then blocks on the futex.
template <typename T>
T wait_change(const std::atomic<T>& value, T old) {
  T now = value.load(std::memory_order_acquire);
  if (now != old) return now;
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (int i = 0;; ++i) {
    for (int k = 0; k < 16; ++k) {
      cpu_relax();
      now = value.load(std::memory_order_acquire);
      if (now != old) return now;
    }
    if ((i & 7) == 7 && std::chrono::steady_clock::now() > deadline) break;
  }
  for (;;) {
    value.wait(old, std::memory_order_acquire);
    now = value.load(std::memory_order_acquire);
    if (now != old) return now;
  }
}

thread_local const ThreadPool* tls_running_pool = nullptr;

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  require(n_threads >= 0, KVC_ERR_INVALID_ARGUMENT,
          "ThreadPool: n_threads must be >= 0 (0 = all hardware threads), got " +
              std::to_string(n_threads));
  require(n_threads <= kMaxChunks, KVC_ERR_INVALID_ARGUMENT,
          "ThreadPool: n_threads must be <= " + std::to_string(kMaxChunks) + ", got " +
              std::to_string(n_threads));
  if (n_threads == 0) {
    n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  n_threads_ = n_threads;
  workers_.reserve(static_cast<size_t>(n_threads - 1));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_main(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work_on(uint32_t gen) {
  uint64_t c = claim_.load(std::memory_order_acquire);
  for (;;) {
    // The chunk count travels in the claim word itself: read from job_chunks_ it could belong
    // to the next job, which the caller starts describing before it publishes the new claim.
    const uint32_t index = static_cast<uint32_t>(c & 0xFFFF);
    const uint32_t chunks = static_cast<uint32_t>((c >> 16) & 0xFFFF);
    if (static_cast<uint32_t>(c >> 32) != gen || index >= chunks) return;
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;  // c now holds the current value
    }
    // The claim succeeded, so job `gen` stays current (and its fields stable) until this chunk
    // is counted in done_.
    const int64_t begin = std::min(job_n_, job_chunk_ * index);
    const int64_t end = std::min(job_n_, begin + job_chunk_);
    if (begin < end) {
      try {
        (*job_)(begin, end, static_cast<int>(index));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<int>(chunks))
      done_.notify_all();
    c = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_main() {
  tls_running_pool = this;
  uint32_t seen = 0;
  for (;;) {
    seen = wait_change(generation_, seen);
    if (stop_.load(std::memory_order_relaxed)) return;
    work_on(seen);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  parallel_for_chunks(n, n_threads_, fn);
}

void ThreadPool::parallel_for_chunks(int64_t n, int n_chunks,
                                     const std::function<void(int64_t, int64_t, int)>& fn) {
  require(tls_running_pool != this, KVC_ERR_INVALID_ARGUMENT,
          "ThreadPool::parallel_for called from inside a task of the same pool");
  require(n_chunks >= 1 && n_chunks <= kMaxChunks, KVC_ERR_INVALID_ARGUMENT,
          "ThreadPool::parallel_for_chunks: n_chunks must be in [1, " +
              std::to_string(kMaxChunks) + "], got " + std::to_string(n_chunks));
  if (n <= 0) return;
  if (n < n_chunks) n_chunks = static_cast<int>(n);  // no empty chunks
  const int64_t chunk = (n + n_chunks - 1) / n_chunks;
  if (n_threads_ == 1 || n == 1) {
    // Same chunks, in order, on the caller.
    for (int64_t begin = 0, index = 0; begin < n; begin += chunk, ++index)
      fn(begin, std::min(n, begin + chunk), static_cast<int>(index));
    return;
  }
  std::lock_guard<std::mutex> submit(submit_mutex_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = chunk;
  error_ = nullptr;
  done_.store(0, std::memory_order_relaxed);
  const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  claim_.store((static_cast<uint64_t>(gen) << 32) | (static_cast<uint64_t>(n_chunks) << 16),
               std::memory_order_release);
  generation_.store(gen, std::memory_order_release);
  generation_.notify_all();

  tls_running_pool = this;
  work_on(gen);
  tls_running_pool = nullptr;

  for (int finished = done_.load(std::memory_order_acquire); finished != n_chunks;
       finished = done_.load(std::memory_order_acquire)) {
    wait_change(done_, finished);
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace kvc::cpu
