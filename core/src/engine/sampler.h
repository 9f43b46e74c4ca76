// kvc::Sampler: picks the next token from the logits of the last step (kvc_sampler in the C
// ABI). The chain, in the order of Hugging Face transformers' logits processors and warpers:
//
//   1. repetition penalty (CTRL, Keskar et al. 2019; HF's RepetitionPenaltyLogitsProcessor): for
//      every distinct id among the last `repetition_last_n` tokens of the history (-1: all of
//      it), a logit l > 0 becomes l / penalty and a logit l <= 0 becomes l * penalty;
//   2. temperature 0: greedy, the id of the largest logit (the lowest id among equal ones);
//      steps 3-7 are skipped;
//   3. temperature T > 0: s = l / T; candidates are sorted by s descending, then id ascending;
//   4. top_k > 0: the first k candidates are kept (exactly k, ties broken by id);
//   5. probabilities p = softmax(s) over the kept candidates (in double);
//   6. top_p < 1: the shortest prefix of the sorted candidates whose probabilities sum to at
//      least top_p is kept (candidate i is kept iff the sum of p over candidates before it is
//      < top_p; so at least one is kept);
//   7. min_p > 0: the candidates with p >= min_p * p_max are kept (p_max: the first one's);
//   8. the kept probabilities are renormalized (candidates whose probability underflowed to
//      0 are dropped) and one is drawn by inverse CDF in the sorted order with u = the n-th
//      output of SplitMix64 seeded with `seed` (n counts the tokens sampled since create or
//      reset, from 0; greedy picks use up their draw too):
//        z = seed + (n + 1) * 0x9E3779B97F4A7C15
//        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//        z = z ^ (z >> 31);     u = (z >> 11) * 2^-53  in [0, 1)
//      the token is the first candidate whose cumulative probability exceeds u (the last
//      one if rounding leaves the sum at or below u).
//
// The result depends only on the logits, the history and the seed, so a generation is the
// same on every run; on the CPU also for every thread count, as the logits are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvc/kvc.h"

namespace kvc {

struct SamplerConfig {
  double temperature = 1.0;
  int32_t top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  int32_t repetition_last_n = 64;
  uint64_t seed = 0;
};

// The library's defaults (kvc_sampler_options_init).
kvc_sampler_options default_sampler_options();
// Checks every field (throws KVC_ERR_INVALID_ARGUMENT naming the field and the value).
SamplerConfig sampler_config(const kvc_sampler_options& options);

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& config);

  struct Candidate {
    int32_t id;
    double p;  // normalized over the kept candidates
  };

  // Forgets the history and restarts the random stream (draw 0 next).
  void reset();
  // Adds tokens to the history the repetition penalty looks at (e.g. the prompt).
  void accept(const int32_t* tokens, size_t n);
  // Samples one id from logits[0..n) and adds it to the history. `allowed` (may be null) masks
  // ids out: allowed[i] == 0 never comes out. Non-finite logits (NaN, -inf) are never chosen;
  // KVC_ERR_INVALID_ARGUMENT when no logit is finite and allowed.
  int32_t sample(const float* logits, size_t n, const uint8_t* allowed = nullptr);
  // The candidates steps 1-7 keep for these logits and the current history, in the order the
  // draw walks them, with their renormalized probabilities. Draws nothing.
  std::vector<Candidate> candidates(const float* logits, size_t n,
                                    const uint8_t* allowed = nullptr) const;

  const SamplerConfig& config() const { return config_; }
  const std::vector<int32_t>& history() const { return history_; }
  uint64_t draws() const { return draws_; }

  // The n-th output of SplitMix64 seeded with `seed`, as a double in [0, 1).
  static double uniform(uint64_t seed, uint64_t n);

 private:
  SamplerConfig config_;
  std::vector<int32_t> history_;
  uint64_t draws_ = 0;
};

}  // namespace kvc
