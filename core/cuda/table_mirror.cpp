#include "table_mirror.h"

#include <algorithm>

namespace kvc::cuda {

TableMirror::TableMirror(size_t n_heads)
    : state_(n_heads, State::kClean),
      device_size_(n_heads, 0),
      pending_offset_(n_heads, 0),
      pending_count_(n_heads, -1) {}

void TableMirror::invalidate(int64_t head) {
  if (head < 0) {
    std::fill(state_.begin(), state_.end(), State::kDirty);
    return;
  }
  state_[static_cast<size_t>(head)] = State::kDirty;
}

void TableMirror::plan_applied(const kvc_plan& plan, const KvCache& cache) {
  if (plan.kind != KVC_PLAN_KEEP && plan.kind != KVC_PLAN_EVICT) return;
  int64_t shared_offset = -1;  // a shared KEEP list is stored once
  for (size_t i = 0; i < state_.size(); ++i) {
    const size_t list = plan.shared ? 0 : i;
    const int32_t* ranks = plan.ranks + list * static_cast<size_t>(plan.stride);
    const int64_t count = plan.counts[list];
    const int64_t old_size = device_size_[i];
    const int64_t new_size =
        plan.kind == KVC_PLAN_KEEP ? count : old_size - count;
    // A gather needs the device table to be the one the plan was made against.
    if (state_[i] != State::kClean || new_size != cache.head_at(i).size()) {
      state_[i] = State::kDirty;
      continue;
    }
    if (plan.kind == KVC_PLAN_KEEP) {
      if (!plan.shared || shared_offset < 0) {
        const int64_t off = static_cast<int64_t>(pending_ranks_.size());
        pending_ranks_.insert(pending_ranks_.end(), ranks, ranks + count);
        if (plan.shared) shared_offset = off;
        pending_offset_[i] = static_cast<int32_t>(off);
      } else {
        pending_offset_[i] = static_cast<int32_t>(shared_offset);
      }
    } else {  // EVICT: keep the complement of the (increasing) evicted ranks
      pending_offset_[i] = static_cast<int32_t>(pending_ranks_.size());
      int64_t e = 0;
      for (int64_t r = 0; r < old_size; ++r) {
        if (e < count && ranks[e] == r) {
          ++e;
          continue;
        }
        pending_ranks_.push_back(static_cast<int32_t>(r));
      }
    }
    pending_count_[i] = static_cast<int32_t>(new_size);
    device_size_[i] = new_size;
    state_[i] = State::kGather;
  }
}

void TableMirror::prepare(const KvCache& cache, TableUpload& out) {
  const size_t n = state_.size();
  out.sizes.assign(n, 0);
  out.gather_offset.assign(n, 0);
  out.gather_count.assign(n, -1);
  out.gather_ranks.swap(pending_ranks_);
  pending_ranks_.clear();
  out.first.assign(n, 0);
  out.entry_offset.assign(n + 1, 0);
  out.slots.clear();
  out.positions.clear();
  out.tokens.clear();
  out.any_gather = false;
  for (size_t i = 0; i < n; ++i) {
    const HeadCache& h = cache.head_at(i);
    const int64_t size = h.size();
    int64_t first = 0;
    if (state_[i] == State::kGather && device_size_[i] <= size) {
      out.gather_offset[i] = pending_offset_[i];
      out.gather_count[i] = pending_count_[i];
      out.any_gather = true;
      first = device_size_[i];
    } else if (state_[i] == State::kClean && device_size_[i] <= size) {
      first = device_size_[i];
    }
    out.sizes[i] = static_cast<int32_t>(size);
    out.first[i] = static_cast<int32_t>(first);
    out.entry_offset[i] = static_cast<int32_t>(out.slots.size());
    for (int64_t r = first; r < size; ++r) {
      out.slots.push_back(h.slots()[static_cast<size_t>(r)]);
      out.positions.push_back(static_cast<int32_t>(h.positions()[static_cast<size_t>(r)]));
      out.tokens.push_back(h.token_ids()[static_cast<size_t>(r)]);
    }
    state_[i] = State::kClean;
    device_size_[i] = size;
    pending_count_[i] = -1;
  }
  out.entry_offset[n] = static_cast<int32_t>(out.slots.size());
}

void TableMirror::device_applied(const KvCache& cache) {
  for (size_t i = 0; i < state_.size(); ++i)
    if (state_[i] == State::kClean) device_size_[i] = cache.head_at(i).size();
}

}  // namespace kvc::cuda
