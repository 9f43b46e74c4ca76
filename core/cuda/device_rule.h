// Host side of the device rule (rule_math.h): a kvc_rule turned into rule_math::Rule with its
// arrays in RuleEngine's form (separators sorted and unique, score layers defaulted to every
// layer), and a sequential Team for running rule_math on the host (tests, reference).
#pragma once

#include <cstdint>
#include <vector>

#include "kvc/policy.h"
#include "rule_math.h"

namespace kvc::cuda {

struct RuleData {
  rule_math::Rule rule;  // its pointers point into the vectors below (or device copies)
  std::vector<int32_t> separators, score_layers;
  std::vector<int64_t> layer_heavy;
  bool has_layer_heavy = false;

  // Points rule's arrays at this object's vectors.
  void bind_host();
};

RuleData make_rule_data(const kvc_rule& rule, int64_t trigger_size, int32_t n_layers,
                        int32_t n_heads);

// The host's Team: for_each is a plain loop (each f(i) is independent, so any order gives the
// result of the device's parallel loop).
struct SequentialTeam {
  template <class F>
  void for_each(int64_t n, const F& f) const {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
};

// Scratch sized for n_layers * n_heads groups of at most `max_entries` entries.
struct HostScratch {
  std::vector<double> raw, score, tie;
  std::vector<uint8_t> keep;
  std::vector<int32_t> idx, pool;
  std::vector<rule_math::Layout> layouts;
  rule_math::Scratch view;
  void size_for(int64_t groups, int32_t n_layers, int32_t n_heads, int64_t max_entries);
};

// Scratch geometry shared by host and device: index rows a power of two >= the row stride.
int64_t scratch_stride(int64_t max_entries);

}  // namespace kvc::cuda
