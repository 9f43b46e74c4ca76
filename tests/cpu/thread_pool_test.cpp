#include "cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "common/error.h"

namespace kvc::cpu {
namespace {

TEST(ThreadPool, SizeCountsCaller) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(3).size(), 3);
  EXPECT_GE(ThreadPool(0).size(), 1);
  EXPECT_THROW(ThreadPool(-1), kvc::Error);
}

// Every index is visited exactly once, chunks are contiguous, fixed and use valid thread indices.
TEST(ThreadPool, CoversRangeWithFixedContiguousChunks) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 3, 5, 8, 17, 1000}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      std::vector<int64_t> begins(static_cast<size_t>(threads), -1), ends(begins);
      pool.parallel_for(n, [&](int64_t b, int64_t e, int t) {
        ASSERT_GE(t, 0);
        ASSERT_LT(t, threads);
        begins[t] = b;
        ends[t] = e;
        for (int64_t i = b; i < e; ++i) ++hits[i];
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n=" << n << " i=" << i;
      const int64_t chunk = (n + threads - 1) / threads;
      for (int t = 0; t < threads; ++t) {
        if (begins[t] < 0) continue;  // empty chunk: not called
        EXPECT_EQ(begins[t], t * chunk);
        EXPECT_EQ(ends[t], std::min(n, (t + 1) * chunk));
      }
    }
  }
}

TEST(ThreadPool, EmptyRangeDoesNotCall) {
  ThreadPool pool(2);
  bool called = false;
  pool.parallel_for(0, [&](int64_t, int64_t, int) { called = true; });
  EXPECT_FALSE(called);
}

// Many short back-to-back jobs (the decode pattern), with pauses that let workers go to sleep.
TEST(ThreadPool, ManyShortJobs) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  for (int iter = 0; iter < 4000; ++iter) {
    pool.parallel_for(64, [&](int64_t b, int64_t e, int) { total += e - b; });
    if (iter % 1000 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(total.load(), int64_t{4000} * 64);
}

TEST(ThreadPool, ExceptionIsRethrownAfterAllChunks) {
  ThreadPool pool(2);
  std::atomic<int> finished{0};
  EXPECT_THROW(pool.parallel_for(2,
                                 [&](int64_t b, int64_t, int) {
                                   if (b == 1) throw std::runtime_error("chunk failed");
                                   ++finished;
                                 }),
               std::runtime_error);
  EXPECT_EQ(finished.load(), 1);
  // The pool stays usable.
  std::atomic<int> n{0};
  pool.parallel_for(10, [&](int64_t b, int64_t e, int) { n += static_cast<int>(e - b); });
  EXPECT_EQ(n.load(), 10);
}

TEST(ThreadPool, NestedCallIsRejected) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(2,
                                 [&](int64_t, int64_t, int) {
                                   pool.parallel_for(2, [](int64_t, int64_t, int) {});
                                 }),
               kvc::Error);
}

TEST(ThreadPool, DestroyWhileIdle) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(3);
    if (i % 2) pool.parallel_for(3, [](int64_t, int64_t, int) {});
  }
}

}  // namespace
}  // namespace kvc::cpu
