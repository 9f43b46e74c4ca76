// Read bandwidth for the decode floor (developer-only): each of T threads sums its contiguous
// share of a large buffer, walking S equal sub-ranges of it in lockstep (S = 1 is a plain
// STREAM-like read; S > 1 keeps more cache-line misses in flight, as a matvec over S rows
// does). Prints one line per (threads, streams): the median GB/s over the passes.
//
//   cc -O3 -march=native -fopenmp tools/peer/read_bw.c -o read_bw && ./read_bw [MiB] [passes]
//
// Portable: plain C over GCC/Clang vector types (64 bytes each), which the compiler maps to
// whatever the machine has (AVX-512, AVX2, SSE, NEON), so it runs on AVX2-only CPUs too.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

typedef float v8 __attribute__((vector_size(32)));

// Sums n floats (n a multiple of 16 * s) as s interleaved streams of n / s floats each, two
// 32-byte vectors (one cache line) per stream and step.
static float sum_streams(const float* p, size_t n, int s) {
  v8 acc[8][2];
  memset(acc, 0, sizeof acc);
  const size_t len = n / (size_t)s;
  for (size_t i = 0; i < len; i += 16)
    for (int k = 0; k < s; ++k) {
      v8 a, b;
      memcpy(&a, p + k * len + i, sizeof a);
      memcpy(&b, p + k * len + i + 8, sizeof b);
      acc[k][0] += a;
      acc[k][1] += b;
    }
  float total = 0;
  for (int k = 0; k < 8; ++k)
    for (int l = 0; l < 8; ++l) total += acc[k][0][l] + acc[k][1][l];
  return total;
}

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
  const int passes = argc > 2 ? atoi(argv[2]) : 7;
  const size_t n = mib << 18;  // floats
  float* buf = aligned_alloc(64, n * sizeof(float));
  if (!buf) return 1;
  for (size_t i = 0; i < n; ++i) buf[i] = (float)(i & 1023) * 1e-3f;
  const int threads[] = {1, 2}, streams[] = {1, 4, 8};
  volatile float sink = 0;
  for (int ti = 0; ti < 2; ++ti) {
    for (int si = 0; si < 3; ++si) {
      const int t = threads[ti], s = streams[si];
      double gbs[64];
      for (int r = 0; r < passes && r < 64; ++r) {
        float part[2] = {0, 0};
        const double t0 = now();
#pragma omp parallel num_threads(t)
        {
          const int id = omp_get_thread_num();
          const size_t share = n / (size_t)t;
          part[id] = sum_streams(buf + id * share, share, s);
        }
        gbs[r] = (double)n * sizeof(float) / (now() - t0) / 1e9;
        sink += part[0] + part[1];
      }
      qsort(gbs, (size_t)passes, sizeof(double), cmp);
      printf("threads %d streams %d GB/s %.2f\n", t, s, gbs[passes / 2]);
      fflush(stdout);
    }
  }
  free(buf);
  return 0;
}
