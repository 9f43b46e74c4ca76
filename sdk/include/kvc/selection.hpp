/*
 * kvc/selection.hpp — the one top-k selection of kvc (header-only, C++17, no dependencies).
 *
 * Every "keep the k best entries by a score" in kvc goes through partition_best() (or
 * keep_best(), which also sorts what it keeps): the engine's rules
 * (core/src/policy/rule_engine.cpp), the SDK's Selection helper (kvc/policy.hpp), the test
 * references, and the contract a device backend implements. The order is total, so the
 * kept set never depends on the algorithm or the input order:
 *
 *   1. the better score first: the larger one (Order::Largest) or the smaller (Order::Smallest);
 *   2. a NaN score after every number, whatever the order;
 *   3. equal scores (or two NaNs): the smaller candidate first, by the candidate's operator<.
 *
 * Candidates are ranks (rank 0 = the oldest entry, so "smaller" means "older") or any value
 * with operator<, e.g. a (position, head) pair when heads compete for one budget.
 */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iterator>

namespace kvc::selection {

enum class Order { Largest, Smallest };

// Rules 1 and 2: whether score `a` ranks strictly before score `b` (ties rank neither way).
template <class S>
bool score_before(S a, S b, Order order) {
  const bool nan_a = std::isnan(a), nan_b = std::isnan(b);
  if (nan_a || nan_b) return !nan_a && nan_b;
  return order == Order::Largest ? a > b : a < b;
}

// The full order of rules 1-3 over candidates x and y with scores sx and sy.
template <class C, class S>
bool candidate_before(const C& x, S sx, const C& y, S sy, Order order) {
  if (score_before(sx, sy, order)) return true;
  if (score_before(sy, sx, order)) return false;
  return x < y;
}

// Moves the k best candidates of [first, last) (scored by `score_of(candidate)`) to the front,
// in unspecified order, and returns the end of that kept range; the rest follow it. k >= the
// count keeps everything. Linear time on average (std::nth_element).
template <class It, class ScoreOf>
It partition_best(It first, It last, std::size_t k, ScoreOf score_of, Order order) {
  const auto n = static_cast<std::size_t>(std::distance(first, last));
  if (k >= n) return last;
  const auto before = [&](const auto& x, const auto& y) {
    return candidate_before(x, score_of(x), y, score_of(y), order);
  };
  const It kth = first + static_cast<std::ptrdiff_t>(k);
  std::nth_element(first, kth, last, before);
  return kth;
}

// partition_best, with the kept range sorted by candidate (for ranks: oldest first).
template <class It, class ScoreOf>
It keep_best(It first, It last, std::size_t k, ScoreOf score_of, Order order) {
  const It end = partition_best(first, last, k, score_of, order);
  std::sort(first, end);
  return end;
}

}  // namespace kvc::selection
