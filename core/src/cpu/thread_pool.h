// Persistent fork-join thread pool for the CPU kernels.
//
// The forward pass calls parallel_for about ten times per layer per token, each call lasting from
// a few microseconds to a few hundred, so the pool keeps its workers alive, wakes them by bumping
// a generation counter, and lets idle workers spin for a short while before they block in the
// kernel. The split into chunks is fixed, but chunks are claimed by whichever thread is ready:
// the caller works too and takes over the chunks of workers that have not started yet, so a
// worker descheduled on a busy machine delays a call by at most the chunk it is running.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvc::cpu {

class ThreadPool {
 public:
  // n_threads counts the caller; 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Splits [0, n) into size() contiguous chunks of ceil(n / size()) items (the split depends only
  // on n and size(), which keeps results reproducible) and calls fn(begin, end, thread_index) for
  // every non-empty chunk, each exactly once, on some thread of the pool; thread_index is the
  // chunk number in [0, size()), so it can index per-chunk scratch. Returns when all chunks are
  // done. If fn throws, the first exception is rethrown here after all chunks finish.
  // Calls from several threads are serialised. Calling parallel_for from inside fn on the same
  // pool would deadlock and throws KVC_ERR_INVALID_ARGUMENT instead (a 1-thread pool simply
  // runs the nested call inline).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  // Same, with [0, n) split into n_chunks chunks (ceil(n / n_chunks) items each) and fn's third
  // argument the chunk number in [0, n_chunks). More chunks than threads balance the load when
  // the threads run at different speeds (a busy sibling, a slower memory path): whoever is
  // done first claims the next chunk.
  static constexpr int kMaxChunks = 0xFFFF;
  void parallel_for_chunks(int64_t n, int n_chunks,
                           const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void worker_main();
  // Claims and runs chunks of job `gen` until none is left (or another job is current).
  void work_on(uint32_t gen);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;

  // Job description, written by the caller before the generation bump (release) and read by
  // workers after they observe it (acquire).
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 0;


  alignas(64) std::atomic<uint32_t> generation_{0};  // 32-bit: waits map directly onto a futex
  // (generation << 32) | (chunk count << 16) | next unclaimed chunk; claiming with a CAS that
  // checks the generation keeps a late worker from taking a chunk of a newer job.
  alignas(64) std::atomic<uint64_t> claim_{0};
  alignas(64) std::atomic<int> done_{0};  // chunks finished in the current job
  alignas(64) std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace kvc::cpu
