#include "cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
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

// Chunk counts other than the pool size: every item once, chunks of ceil(n / chunks) numbered
// in order, and at most n chunks. The 1-thread pool runs the same chunks inline.
TEST(ThreadPool, ChunksCoverRangeOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int chunks : {1, 2, 5, 8, 64}) {
      for (int64_t n : {1, 3, 8, 17, 1000}) {
        std::vector<int> hits(static_cast<size_t>(n), 0);
        std::vector<int> chunk_seen(static_cast<size_t>(chunks), 0);
        std::mutex m;
        pool.parallel_for_chunks(n, chunks, [&](int64_t b, int64_t e, int c) {
          std::lock_guard<std::mutex> lock(m);
          ASSERT_GE(c, 0);
          ASSERT_LT(c, std::min<int64_t>(n, chunks));
          const int64_t used = std::min<int64_t>(n, chunks);  // at most n chunks
          const int64_t size = (n + used - 1) / used;
          EXPECT_EQ(b, c * size);
          EXPECT_EQ(e, std::min(n, b + size));
          ++chunk_seen[static_cast<size_t>(c)];
          for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n=" << n << " i=" << i;
        for (int c = 0; c < chunks; ++c) ASSERT_LE(chunk_seen[static_cast<size_t>(c)], 1);
      }
    }
    EXPECT_THROW(pool.parallel_for_chunks(10, 0, [](int64_t, int64_t, int) {}), kvc::Error);
    EXPECT_THROW(pool.parallel_for_chunks(10, ThreadPool::kMaxChunks + 1,
                                          [](int64_t, int64_t, int) {}),
                 kvc::Error);
  }
}

// Back-to-back jobs whose chunk counts differ (the decode pattern: products with several chunks
// per thread between per-head loops with one). A worker finishing the last chunk of one job
// must never claim a chunk while the caller is already describing the next one: that once ran
// a chunk twice and left the caller waiting for a count it had passed.
// The loop runs on its own thread under a watchdog, so that a hang fails fast with a message.
TEST(ThreadPool, AlternatingChunkCountsRunEachChunkOnce) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> runs(16);
  std::atomic<int> bad_iteration{-1};
  std::atomic<bool> finished{false};
  std::thread driver([&] {
    for (int iter = 0; iter < 50000 && bad_iteration.load() < 0; ++iter) {
      const int chunks = iter % 2 == 0 ? 2 : 8;
      for (int c = 0; c < chunks; ++c) runs[static_cast<size_t>(c)].store(0);
      pool.parallel_for_chunks(chunks, chunks, [&](int64_t, int64_t, int c) {
        runs[static_cast<size_t>(c)].fetch_add(1);
      });
      for (int c = 0; c < chunks; ++c)
        if (runs[static_cast<size_t>(c)].load() != 1) bad_iteration.store(iter);
    }
    finished.store(true);
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!finished.load() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!finished.load()) {
    std::fprintf(stderr, "parallel_for_chunks did not return within 120 s: a chunk was lost or "
                         "counted twice\n");
    std::_Exit(1);  // the driver is stuck inside the pool; nothing can be joined
  }
  driver.join();
  EXPECT_EQ(bad_iteration.load(), -1) << "a chunk ran other than once";
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
