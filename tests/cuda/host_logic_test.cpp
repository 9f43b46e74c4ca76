// Host-side logic of the CUDA backend, run without a GPU: the table bookkeeping (checked
// against a simulated device that replays uploads exactly as the kernels do), the 16-bit
// weight conversion, and the rotary table.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "host_convert.h"
#include "common/error.h"
#include "model/dtype_convert.h"
#include "table_mirror.h"

namespace kvc::cuda {
namespace {

// What the device holds: per head, the rank -> (slot, position) table. apply() does what
// gather_tables_kernel then write_tables_kernel do.
struct SimulatedDevice {
  std::vector<std::vector<int32_t>> slots, positions, tokens;
  explicit SimulatedDevice(size_t heads) : slots(heads), positions(heads), tokens(heads) {}
  void apply(const TableUpload& u) {
    for (size_t i = 0; i < slots.size(); ++i) {
      if (u.gather_count[i] >= 0) {
        std::vector<int32_t> s, p, t;
        for (int32_t j = 0; j < u.gather_count[i]; ++j) {
          const int32_t r = u.gather_ranks[static_cast<size_t>(u.gather_offset[i] + j)];
          EXPECT_LT(static_cast<size_t>(r), slots[i].size()) << "gather past the old table";
          s.push_back(slots[i].at(static_cast<size_t>(r)));
          p.push_back(positions[i].at(static_cast<size_t>(r)));
          t.push_back(tokens[i].at(static_cast<size_t>(r)));
        }
        slots[i] = s;
        positions[i] = p;
        tokens[i] = t;
      }
      slots[i].resize(static_cast<size_t>(u.sizes[i]), -1);
      positions[i].resize(static_cast<size_t>(u.sizes[i]), -1);
      tokens[i].resize(static_cast<size_t>(u.sizes[i]), -1);
      for (int32_t r = u.first[i]; r < u.sizes[i]; ++r) {
        const size_t e = static_cast<size_t>(u.entry_offset[i] + r - u.first[i]);
        slots[i][static_cast<size_t>(r)] = u.slots[e];
        positions[i][static_cast<size_t>(r)] = u.positions[e];
        tokens[i][static_cast<size_t>(r)] = u.tokens[e];
      }
    }
  }
  void expect_matches(const KvCache& c) const {
    for (size_t i = 0; i < slots.size(); ++i) {
      const HeadCache& h = c.head_at(i);
      ASSERT_EQ(slots[i].size(), static_cast<size_t>(h.size())) << "head " << i;
      for (size_t r = 0; r < slots[i].size(); ++r) {
        ASSERT_EQ(slots[i][r], h.slots()[r]) << "head " << i << " rank " << r;
        ASSERT_EQ(positions[i][r], h.positions()[r]) << "head " << i << " rank " << r;
        ASSERT_EQ(tokens[i][r], h.token_ids()[r]) << "head " << i << " rank " << r;
      }
    }
  }
};

void append(KvCache& c, int64_t position) {
  for (size_t i = 0; i < c.n_head_caches(); ++i)
    c.head_at(i).append(nullptr, nullptr, position, static_cast<int32_t>(position % 13), false);
}

struct Plan {
  kvc_plan plan{};
  std::vector<int32_t> ranks;
  std::vector<int64_t> counts;
};

// Keeps sinks + the last `recent` of every head (shared) or a random subset per head.
Plan make_plan(const KvCache& c, bool shared, kvc_plan_kind kind, std::mt19937& rng) {
  Plan p;
  const size_t lists = shared ? 1 : c.n_head_caches();
  const int64_t stride = std::max<int64_t>(c.max_entries(), 1);
  p.ranks.assign(lists * static_cast<size_t>(stride), 0);
  p.counts.assign(lists, 0);
  for (size_t l = 0; l < lists; ++l) {
    const int64_t n = c.head_at(l).size();
    std::vector<int32_t> chosen;
    for (int32_t r = 0; r < n; ++r)
      if (std::bernoulli_distribution(0.6)(rng)) chosen.push_back(r);
    std::copy(chosen.begin(), chosen.end(), &p.ranks[l * static_cast<size_t>(stride)]);
    p.counts[l] = static_cast<int64_t>(chosen.size());
  }
  p.plan.struct_size = sizeof(kvc_plan);
  p.plan.kind = kind;
  p.plan.shared = shared ? 1 : 0;
  p.plan.ranks = p.ranks.data();
  p.plan.stride = stride;
  p.plan.counts = p.counts.data();
  return p;
}

TEST(TableMirror, DecodeStepsSendOnlyTheNewEntries) {
  KvCache cache(2, 3, 4);
  cache.set_store_kv(false);
  TableMirror mirror(cache.n_head_caches());
  SimulatedDevice dev(cache.n_head_caches());
  TableUpload u;
  for (int t = 0; t < 5; ++t) append(cache, t);  // a prefill of 5
  mirror.prepare(cache, u);
  EXPECT_EQ(u.slots.size(), 5u * 6u);
  dev.apply(u);
  dev.expect_matches(cache);
  append(cache, 5);  // one decode step
  mirror.prepare(cache, u);
  EXPECT_EQ(u.slots.size(), 6u) << "one entry per head";
  EXPECT_FALSE(u.any_gather);
  dev.apply(u);
  dev.expect_matches(cache);
}

TEST(TableMirror, SharedKeepPlanIsReplayedFromOneList) {
  KvCache cache(2, 2, 4);
  cache.set_store_kv(false);
  TableMirror mirror(cache.n_head_caches());
  SimulatedDevice dev(cache.n_head_caches());
  TableUpload u;
  for (int t = 0; t < 10; ++t) append(cache, t);
  mirror.prepare(cache, u);
  dev.apply(u);
  std::mt19937 rng(1);
  Plan p = make_plan(cache, true, KVC_PLAN_KEEP, rng);
  cache.apply(p.plan);
  mirror.plan_applied(p.plan, cache);
  append(cache, 10);
  mirror.prepare(cache, u);
  EXPECT_TRUE(u.any_gather);
  EXPECT_EQ(u.gather_ranks.size(), static_cast<size_t>(p.counts[0])) << "stored once";
  EXPECT_EQ(u.slots.size(), 4u) << "only the appended entries are sent";
  dev.apply(u);
  dev.expect_matches(cache);
}

// The device rule compacts the device tables itself; the host applies the same plan and the
// mirror then sends only what is appended afterwards.
TEST(TableMirror, PlansAppliedOnTheDeviceSendNothing) {
  KvCache cache(2, 2, 4);
  cache.set_store_kv(false);
  TableMirror mirror(cache.n_head_caches());
  SimulatedDevice dev(cache.n_head_caches());
  TableUpload u;
  for (int t = 0; t < 12; ++t) append(cache, t);
  mirror.prepare(cache, u);
  dev.apply(u);
  std::mt19937 rng(3);
  for (int round = 0; round < 20; ++round) {
    Plan p = make_plan(cache, round % 3 == 0, round % 2 ? KVC_PLAN_EVICT : KVC_PLAN_KEEP, rng);
    // The device's apply_plan_kernel: each head keeps its listed (KEEP) or unlisted (EVICT)
    // ranks in order.
    TableUpload g;
    g.sizes.assign(cache.n_head_caches(), 0);
    g.gather_offset.assign(cache.n_head_caches(), 0);
    g.gather_count.assign(cache.n_head_caches(), -1);
    g.first.assign(cache.n_head_caches(), 0);
    g.entry_offset.assign(cache.n_head_caches() + 1, 0);
    for (size_t i = 0; i < cache.n_head_caches(); ++i) {
      const size_t list = p.plan.shared ? 0 : i;
      const int32_t* ranks = p.plan.ranks + list * static_cast<size_t>(p.plan.stride);
      std::vector<uint8_t> listed(dev.slots[i].size(), 0);
      for (int64_t j = 0; j < p.plan.counts[list]; ++j) listed[ranks[j]] = 1;
      g.gather_offset[i] = static_cast<int32_t>(g.gather_ranks.size());
      for (size_t r = 0; r < listed.size(); ++r)
        if (listed[r] == (p.plan.kind == KVC_PLAN_KEEP)) g.gather_ranks.push_back(static_cast<int32_t>(r));
      g.gather_count[i] = static_cast<int32_t>(g.gather_ranks.size()) - g.gather_offset[i];
      g.sizes[i] = g.gather_count[i];
      g.first[i] = g.sizes[i];
    }
    dev.apply(g);
    cache.apply(p.plan);
    mirror.device_applied(cache);
    dev.expect_matches(cache);
    append(cache, 12 + round);
    mirror.prepare(cache, u);
    EXPECT_FALSE(u.any_gather);
    EXPECT_EQ(u.slots.size(), cache.n_head_caches()) << "one entry per head";
    dev.apply(u);
    dev.expect_matches(cache);
  }
}

TEST(TableMirror, ManualChangesAndRepeatedPlansResendWholeTables) {
  KvCache cache(1, 2, 4);
  cache.set_store_kv(false);
  TableMirror mirror(cache.n_head_caches());
  SimulatedDevice dev(cache.n_head_caches());
  TableUpload u;
  for (int t = 0; t < 8; ++t) append(cache, t);
  mirror.prepare(cache, u);
  dev.apply(u);
  const int32_t keep[] = {0, 2, 5};
  cache.head(0, 1).keep(keep, 3);
  mirror.invalidate(1);
  EXPECT_FALSE(mirror.clean(1));
  EXPECT_TRUE(mirror.clean(0));
  mirror.prepare(cache, u);
  EXPECT_EQ(u.first[1], 0);
  EXPECT_EQ(u.first[0], 8);
  dev.apply(u);
  dev.expect_matches(cache);
}

// Random sequences of prefills, decode steps, shared/per-head KEEP/EVICT plans (sometimes two
// between forwards), manual keeps, resets and table re-allocation: the simulated device
// always ends equal to the host.
TEST(TableMirror, RandomHistoriesKeepTheDeviceEqualToTheHost) {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 50; ++trial) {
    KvCache cache(2, 3, 4);
    cache.set_store_kv(false);
    TableMirror mirror(cache.n_head_caches());
    SimulatedDevice dev(cache.n_head_caches());
    TableUpload u;
    int64_t pos = 0;
    for (int step = 0; step < 40; ++step) {
      const int n = std::uniform_int_distribution<int>(1, step == 0 ? 12 : 3)(rng);
      for (int t = 0; t < n; ++t) append(cache, pos++);
      mirror.prepare(cache, u);
      dev.apply(u);
      dev.expect_matches(cache);
      const int action = std::uniform_int_distribution<int>(0, 9)(rng);
      const int plans = action < 5 ? 1 : action < 7 ? 2 : 0;
      for (int k = 0; k < plans; ++k) {
        const bool shared = std::bernoulli_distribution(0.5)(rng);
        const auto kind = std::bernoulli_distribution(0.5)(rng) ? KVC_PLAN_KEEP : KVC_PLAN_EVICT;
        Plan p = make_plan(cache, shared, kind, rng);
        if (shared && kind == KVC_PLAN_KEEP) {
          // Shared plans need equal heads: only when every head holds the same count.
          if (cache.min_entries() != cache.max_entries()) continue;
        }
        if (shared && kind == KVC_PLAN_EVICT && cache.min_entries() != cache.max_entries())
          continue;
        cache.apply(p.plan);
        mirror.plan_applied(p.plan, cache);
      }
      if (action == 7 && cache.head(1, 2).size() > 1) {
        const int32_t keep[] = {0};
        cache.head(1, 2).keep(keep, 1);
        mirror.invalidate(1 * 3 + 2);
      }
      if (action == 8 && std::bernoulli_distribution(0.2)(rng)) {
        cache.clear();
        dev = SimulatedDevice(cache.n_head_caches());  // contents irrelevant after a reset
        mirror.invalidate(-1);
      }
      if (action == 9) {  // the backend re-allocated its tables: contents lost
        dev = SimulatedDevice(cache.n_head_caches());
        mirror.invalidate(-1);
      }
    }
  }
}

TEST(ConvertRows, MatchesTheScalarConversionsBitForBit) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const int64_t rows = 5, cols = 9;
  std::vector<float> f32(static_cast<size_t>(rows * cols));
  for (auto& v : f32) v = nd(rng);
  f32[0] = 70000.0f;  // overflows float16
  f32[1] = 1e-7f;     // float16 subnormal
  Matrix m{DType::F32, rows, cols, f32.data()};
  std::vector<uint16_t> h(f32.size()), b(f32.size());
  convert_rows(m, DType::F16, 0, rows, h.data());
  convert_rows(m, DType::BF16, 0, rows, b.data());
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_EQ(h[i], cvt::f32_to_f16(f32[i])) << i;
    EXPECT_EQ(b[i], cvt::f32_to_bf16(f32[i])) << i;
  }
  // 16-bit to the other 16-bit type goes through float32; same type is a copy.
  Matrix mh{DType::F16, rows, cols, h.data()};
  std::vector<uint16_t> hb(f32.size()), hh(f32.size());
  convert_rows(mh, DType::BF16, 0, rows, hb.data());
  convert_rows(mh, DType::F16, 0, rows, hh.data());
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_EQ(hb[i], cvt::f32_to_bf16(cvt::f16_to_f32(h[i]))) << i;
    EXPECT_EQ(hh[i], h[i]) << i;
  }
  // A block of rows lands at the start of `out`.
  std::vector<uint16_t> part(static_cast<size_t>(2 * cols));
  convert_rows(m, DType::F16, 3, 2, part.data());
  for (int64_t i = 0; i < 2 * cols; ++i) EXPECT_EQ(part[i], h[3 * cols + i]);
  EXPECT_THROW(convert_rows(m, DType::F16, 4, 2, part.data()), Error);
  EXPECT_THROW(convert_rows(m, DType::F32, 0, 1, part.data()), Error);
}

TEST(RotaryTable, DeviceTableEqualsTheCpuBackendsTable) {
  for (const int ndims : {16, 20, 32}) {
    RotaryTable cpu(ndims, 10000.0f);
    cpu.ensure(3000);
    std::vector<float> c, s;
    rotary_table(ndims, 10000.0f, 3000, c, s);
    for (int64_t p = 0; p < 3000; ++p)
      for (int i = 0; i < ndims / 2; ++i) {
        ASSERT_EQ(c[static_cast<size_t>(p * (ndims / 2) + i)], cpu.cos_row(p)[i]) << p;
        ASSERT_EQ(s[static_cast<size_t>(p * (ndims / 2) + i)], cpu.sin_row(p)[i]) << p;
      }
  }
}

}  // namespace
}  // namespace kvc::cuda
