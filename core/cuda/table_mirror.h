// Host-side bookkeeping of the device copies of the rank -> slot tables (pure C++, no CUDA).
//
// The host KvCache is the truth for the order of entries. The device keeps, per (layer, head),
// a table of slot numbers and original positions in rank order. Between two forward passes the
// host order changes by appends (always), by a plan (a policy's decision) or by anything else
// (manual keep, reset). TableMirror records those changes and, before the next forward pass,
// says what the device needs:
//   - a head whose device table was current when a plan came replays the plan on the device
//     (a gather of its kept ranks; one list shared by every head for shared plans), so no
//     table is sent;
//   - a head changed any other way (or twice) is re-sent whole;
//   - then the ranks appended since are sent (one entry per head per decode step).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kv_cache.h"
#include "kvc/policy.h"

namespace kvc::cuda {

struct TableUpload {
  std::vector<int32_t> sizes;  // [n_heads] entries per head once the upload is applied
  // Plans replayed first: head i keeps ranks gather_ranks[gather_offset[i] ...
  // + gather_count[i]) of its previous device table, in order; gather_count[i] < 0: none.
  std::vector<int32_t> gather_offset, gather_count, gather_ranks;
  // Then ranks [first[i], sizes[i]) of head i are written from
  // slots/positions[entry_offset[i] ...]; entry_offset has n_heads + 1 items.
  std::vector<int32_t> first, entry_offset;
  std::vector<int32_t> slots, positions, tokens;  // tokens: the entries' token ids
  bool any_gather = false;
};

class TableMirror {
 public:
  explicit TableMirror(size_t n_heads);

  // The device tables of `head` (-1: all) no longer match the host: re-send them whole.
  void invalidate(int64_t head = -1);
  // A validated plan was applied to the host cache (which now holds its result).
  void plan_applied(const kvc_plan& plan, const KvCache& cache);
  // What the device lacks to match `cache`; afterwards the mirror assumes it was applied.
  void prepare(const KvCache& cache, TableUpload& out);
  // The device applied a plan itself (the device rule) and `cache` now holds the same result:
  // every head whose table was current stays current at its new size; others stay as they were.
  void device_applied(const KvCache& cache);

  // For tests: whether head i is current on the device.
  bool clean(size_t head) const { return state_[head] == State::kClean; }

 private:
  enum class State : uint8_t { kClean, kGather, kDirty };
  std::vector<State> state_;
  std::vector<int64_t> device_size_;  // entries of the device table (after a pending gather)
  std::vector<int32_t> pending_offset_, pending_count_, pending_ranks_;
};

}  // namespace kvc::cuda
