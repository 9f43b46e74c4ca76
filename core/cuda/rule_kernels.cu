// The device rule, plan application, live-signal gather and split-K decode attention. The
// selection is rule_math.h's code (host-tested against RuleEngine); this file only gives it a
// Team (one thread block) and an accessor over the device tables.
#include "rule_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "device_math.cuh"

namespace kvc::cuda {
namespace {

namespace rm = rule_math;

using namespace device;  // to_f, from_f, warp_sum, kThreads (device_math.cuh)

// rule_math's Team for one thread block: a block-strided loop, then a barrier. Every thread
// of the block calls it with the same n (see rule_math.h).
struct BlockTeam {
  template <class F>
  __host__ __device__ void for_each(int64_t n, const F& f) const {
#ifdef __CUDA_ARCH__
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) f(i);
    __syncthreads();
#else
    (void)n;
    (void)f;
#endif
  }
};

// rule_math's accessor over the device tables (rank -> slot, position, token) and the
// signals and lazy state by slot.
struct DeviceAccess {
  DeviceCache c;
  const int32_t* tok;
  const float* heavy_sig;
  const float* tie_sig;
  uint8_t* protect;
  int64_t* sizes_after_refresh;

  __host__ __device__ int64_t at(int64_t gi, int64_t r) const {
    return gi * c.table_cap + r;
  }
  __host__ __device__ int64_t slot_at(int64_t gi, int64_t r) const {
    return gi * c.slot_cap + c.slot_table[at(gi, r)];
  }
  __host__ __device__ int64_t n(int64_t gi) const { return c.sizes[gi]; }
  __host__ __device__ bool has_tokens() const { return tok != nullptr; }
  __host__ __device__ int32_t token(int64_t gi, int64_t r) const { return tok[at(gi, r)]; }
  __host__ __device__ int64_t position(int64_t gi, int64_t r) const {
    return c.pos_table[at(gi, r)];
  }
  __host__ __device__ float heavy(int64_t gi, int64_t r) const {
    return heavy_sig[slot_at(gi, r)];
  }
  __host__ __device__ float tie(int64_t gi, int64_t r) const {
    return tie_sig ? tie_sig[slot_at(gi, r)] : 0.0f;
  }
  __host__ __device__ bool is_protected(int64_t gi, int64_t r) const {
    return protect[slot_at(gi, r)] != 0;
  }
  __host__ __device__ void set_protected(int64_t gi, int64_t r, bool v) const {
    if (protect) protect[slot_at(gi, r)] = v ? 1 : 0;
  }
  __host__ __device__ int64_t size_state(int64_t gi) const {
    return sizes_after_refresh ? sizes_after_refresh[gi] : -1;
  }
  __host__ __device__ void set_size_state(int64_t gi, int64_t v) const {
    if (sizes_after_refresh) sizes_after_refresh[gi] = v;
  }
};

__device__ DeviceAccess access_of(const DeviceRuleArgs& a) {
  return DeviceAccess{a.c, a.tok_table, a.heavy, a.tie, a.protect, a.size_state};
}

__global__ void rule_head_kernel(DeviceRuleArgs a, rm::Step s) {
  BlockTeam team;
  DeviceAccess acc = access_of(a);
  const int gi = blockIdx.x;
  const int layer = gi / a.rule.n_heads, head = gi % a.rule.n_heads;
  const bool ev = rm::decide_head(team, a.rule, acc, s, layer, head, a.sc, a.out);
  if (threadIdx.x == 0) a.evicted[gi] = ev ? 1 : 0;
}

__global__ void rule_layer_kernel(DeviceRuleArgs a, rm::Step s) {
  BlockTeam team;
  DeviceAccess acc = access_of(a);
  const int layer = blockIdx.x;
  const bool ev = rm::decide_layer(team, a.rule, acc, s, layer, a.sc, a.out);
  if (threadIdx.x == 0) a.evicted[layer] = ev ? 1 : 0;
}

__global__ void rule_shared_kernel(DeviceRuleArgs a, rm::Step s) {
  BlockTeam team;
  DeviceAccess acc = access_of(a);
  const bool ev = rm::decide_shared(team, a.rule, acc, s, a.sc, a.out);
  if (threadIdx.x == 0) a.evicted[0] = ev ? 1 : 0;
}

__global__ void finish_decision_kernel(const int32_t* evicted, int n, int32_t kind,
                                       int32_t shared, int32_t* kind_shared) {
  __shared__ int any;
  if (threadIdx.x == 0) any = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (evicted[i]) any = 1;
  __syncthreads();
  if (threadIdx.x == 0) {
    kind_shared[0] = any ? kind : KVC_PLAN_NOTHING;
    kind_shared[1] = any ? shared : 0;
  }
}

// One block per (layer, head): thread 0 walks the ranks once (the plan's lists ascend),
// writing the survivors' table rows into scratch and the evicted ranks; then the block copies
// the compacted rows back.
__global__ void apply_plan_kernel(DeviceCache c, int32_t* tok, rm::PlanOut plan,
                                  const int32_t* kind_shared, int32_t* scratch,
                                  int32_t* evict_count, int32_t* evict_packet, int packet_ranks,
                                  int32_t* evict_all) {
  __shared__ int kept;
  const int i = blockIdx.x;
  const int kind = kind_shared[0];
  if (kind == KVC_PLAN_NOTHING) {
    if (threadIdx.x == 0) evict_count[i] = 0;
    return;
  }
  const int64_t list = kind_shared[1] ? 0 : i;
  const int32_t* ranks = plan.ranks + list * plan.stride;
  const int64_t count = plan.counts[list];
  const int n = c.sizes[i];
  const size_t base = static_cast<size_t>(i) * c.table_cap;
  int32_t* s_slot = scratch + 3 * base;
  int32_t* s_pos = s_slot + c.table_cap;
  int32_t* s_tok = s_pos + c.table_cap;
  int32_t* ev_all = evict_all + static_cast<size_t>(i) * plan.stride;
  int32_t* ev_packet = evict_packet + static_cast<size_t>(i) * packet_ranks;
  if (threadIdx.x == 0) {
    int64_t j = 0;
    int k = 0, e = 0;
    for (int r = 0; r < n; ++r) {
      const bool listed = j < count && ranks[j] == r;
      if (listed) ++j;
      const bool keep = kind == KVC_PLAN_KEEP ? listed : !listed;
      if (keep) {
        s_slot[k] = c.slot_table[base + r];
        s_pos[k] = c.pos_table[base + r];
        if (tok) s_tok[k] = tok[base + r];
        ++k;
      } else {
        ev_all[e] = r;
        if (e < packet_ranks) ev_packet[e] = r;
        ++e;
      }
    }
    kept = k;
    evict_count[i] = e;
    c.sizes[i] = k;
  }
  __syncthreads();
  for (int r = threadIdx.x; r < kept; r += blockDim.x) {
    c.slot_table[base + r] = s_slot[r];
    c.pos_table[base + r] = s_pos[r];
    if (tok) tok[base + r] = s_tok[r];
  }
}

__global__ void gather_live_kernel(DeviceCache c, const float* by_slot, const int64_t* offset,
                                   float* out) {
  const int i = blockIdx.x;
  const int n = c.sizes[i];
  const int32_t* st = c.slot_table + static_cast<size_t>(i) * c.table_cap;
  const float* src = by_slot + static_cast<size_t>(i) * c.slot_cap;
  float* dst = out + offset[i];
  for (int r = threadIdx.x; r < n; r += blockDim.x) dst[r] = src[st[r]];
}

// ---- Split-K decode attention -----------------------------------------------------------

// 8 consecutive 16-bit values (one 16-byte load) as floats.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = to_f(v[j]);
}

// grid (n_heads, splits). Warp w scores keys w, w + kWarps, ... of the split: lane l loads
// channels [8l, 8l + 8) of the key row (coalesced 16-byte loads), rotates them (the partner
// channel of a rotary pair is read from the same row, already in L1) and the warp sums the
// dot product. Then each warp accumulates e * v for its keys, lanes owning 8 channels.
template <typename T>
__global__ void split_k_pass1(DeviceCache c, int layer, const float* q, int64_t max_visible,
                              bool shift, const float* cos, const float* sin, int rot,
                              float scale, int splits, float* scores, float* partials) {
  __shared__ float qs[kMaxHeadDim];
  __shared__ float red[kWarps];
  __shared__ float part[kWarps][kMaxHeadDim];
  const int h = blockIdx.x, split = blockIdx.y, hd = c.head_dim, half = rot / 2;
  const int head = layer * c.n_heads + h;
  const int visible = c.sizes[head];
  const int chunk = (visible + splits - 1) / splits;
  const int lo = split * chunk;
  const int hi = min(visible, lo + chunk);
  const int32_t* st = c.slot_table + static_cast<size_t>(head) * c.table_cap;
  const int32_t* pt = c.pos_table + static_cast<size_t>(head) * c.table_cap;
  const T* keys = static_cast<const T*>(c.keys) + static_cast<size_t>(head) * c.slot_cap * hd;
  const T* values = static_cast<const T*>(c.values) + static_cast<size_t>(head) * c.slot_cap * hd;
  float* sc = scores + static_cast<size_t>(h) * max_visible;
  const float* qrow = q + static_cast<size_t>(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = qrow[d];
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int d0 = lane * 8;
  const bool active = d0 < hd;
  float local_max = -INFINITY;
  for (int r = lo + warp; r < hi; r += kWarps) {
    const T* k = keys + static_cast<size_t>(st[r]) * hd;
    const int64_t kpos = shift ? r : pt[r];
    const float* cr = cos + kpos * half;
    const float* sr = sin + kpos * half;
    float s = 0.0f;
    if (active) {
      float kv[8];
      load8(k + d0, kv);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int d = d0 + j;
        float x = kv[j];
        if (d < half)
          x = kv[j] * cr[d] - to_f(k[d + half]) * sr[d];
        else if (d < rot)
          x = kv[j] * cr[d - half] + to_f(k[d - half]) * sr[d - half];
        s += qs[d] * x;
      }
    }
    s = warp_sum(s) * scale;
    if (lane == 0) sc[r] = s;
    local_max = fmaxf(local_max, s);
  }
  // Block max of the split.
  if (lane == 0) red[warp] = local_max;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, red[w]);
  __syncthreads();
  float out[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float sum = 0.0f;
  for (int r = lo + warp; r < hi; r += kWarps) {
    const float e = expf(sc[r] - m);  // sc[r] was written by lane 0 of this warp
    sum += e;
    if (active) {
      float vv[8];
      load8(values + static_cast<size_t>(st[r]) * hd + d0, vv);
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] += e * vv[j];
    }
  }
  if (active)
#pragma unroll
    for (int j = 0; j < 8; ++j) part[warp][d0 + j] = out[j];
  if (lane == 0) red[warp] = sum;
  __syncthreads();
  float* p = partials + (static_cast<size_t>(h) * splits + split) * (hd + 2);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float s = 0.0f;
    for (int w = 0; w < kWarps; ++w) s += part[w][d];
    p[2 + d] = s;
  }
  if (threadIdx.x == 0) {
    float l = 0.0f;
    for (int w = 0; w < kWarps; ++w) l += red[w];
    p[0] = hi > lo ? m : -INFINITY;
    p[1] = l;
  }
}

struct DeviceExp {
  __host__ __device__ float operator()(float x) const {
#ifdef __CUDA_ARCH__
    return expf(x);
#else
    return x;  // never used on the host
#endif
  }
};

// grid (n_heads): merges the splits (rule_math::merge_*), writes ctx and the signals.
template <typename T>
__global__ void split_k_pass2(DeviceCache c, int layer, int64_t max_visible, int splits,
                              const float* scores, const float* partials, bool want_acc,
                              bool want_last, int64_t query, T* ctx) {
  extern __shared__ float sh[];  // m[splits], l[splits]
  float* m = sh;
  float* l = sh + splits;
  const int h = blockIdx.x, hd = c.head_dim;
  const int head = layer * c.n_heads + h;
  const int visible = c.sizes[head];
  const float* p = partials + static_cast<size_t>(h) * splits * (hd + 2);
  for (int i = threadIdx.x; i < splits; i += blockDim.x) {
    m[i] = p[i * (hd + 2)];
    l[i] = p[i * (hd + 2) + 1];
  }
  __syncthreads();
  const DeviceExp ex;
  const rm::SoftmaxTotals t = rm::merge_totals(m, l, splits, ex);
  T* o = ctx + static_cast<size_t>(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x)
    o[d] = from_f<T>(rm::merge_output(m, p + 2, splits, hd + 2, d, t, ex));
  const int32_t* st = c.slot_table + static_cast<size_t>(head) * c.table_cap;
  const float* sc = scores + static_cast<size_t>(h) * max_visible;
  const bool in_window = c.window > 0;
  const size_t row = in_window ? static_cast<size_t>(query % c.window) : 0;
  const float inv = 1.0f / t.sum;
  for (int r = threadIdx.x; r < visible; r += blockDim.x) {
    const float pr = expf(sc[r] - t.max) * inv;
    const size_t s = static_cast<size_t>(head) * c.slot_cap + st[r];
    if (want_acc) c.acc[s] += pr;  // one block per head: no other writer
    if (want_last) c.last[s] = pr;
    if (in_window) {
      const size_t at = s * c.window + row;
      if (c.window_ring) c.window_ring[at] = pr;
      if (c.pivotal_ring)
        c.pivotal_ring[at] = static_cast<double>(pr) * static_cast<double>(visible) >= 1.0;
    }
  }
}

}  // namespace

void decide_rule(const DeviceRuleArgs& a, int64_t step, int64_t n_new, cudaStream_t stream) {
  const rm::Step s = rm::step_kind(a.rule, step, n_new);
  if (a.rule.scope == KVC_SCOPE_SHARED)
    rule_shared_kernel<<<1, kThreads, 0, stream>>>(a, s);
  else if (a.rule.scope == KVC_SCOPE_PER_LAYER || a.rule.adaptive)
    rule_layer_kernel<<<a.rule.n_layers, kThreads, 0, stream>>>(a, s);
  else
    rule_head_kernel<<<a.rule.n_layers * a.rule.n_heads, kThreads, 0, stream>>>(a, s);
}

void finish_decision(const int32_t* evicted, int n_flags, int32_t kind, int32_t shared,
                     int32_t* kind_shared, cudaStream_t stream) {
  finish_decision_kernel<<<1, kThreads, 0, stream>>>(evicted, n_flags, kind, shared,
                                                     kind_shared);
}

void apply_device_plan(const DeviceCache& c, int32_t* tok_table, int n_heads_total,
                       const rule_math::PlanOut& plan, const int32_t* kind_shared,
                       int32_t* scratch, int32_t* evict_count, int32_t* evict_packet,
                       int packet_ranks, int32_t* evict_all, cudaStream_t stream) {
  apply_plan_kernel<<<n_heads_total, kThreads, 0, stream>>>(c, tok_table, plan, kind_shared,
                                                            scratch, evict_count, evict_packet,
                                                            packet_ranks, evict_all);
}

void gather_live(const DeviceCache& c, int n_heads_total, const float* by_slot,
                 const int64_t* offset, float* out, cudaStream_t stream) {
  gather_live_kernel<<<n_heads_total, kThreads, 0, stream>>>(c, by_slot, offset, out);
}

void attention_split_k(const DeviceCache& c, int layer, const float* q, int64_t max_visible,
                       bool shift, const float* cos, const float* sin, int rotary_ndims,
                       float scale, bool want_acc, bool want_last, int64_t query, bool bf16,
                       int splits, float* scores, float* partials, void* ctx,
                       cudaStream_t stream) {
  const dim3 grid(c.n_heads, splits);
  const size_t shared = 2 * static_cast<size_t>(splits) * sizeof(float);
  if (bf16) {
    split_k_pass1<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
        c, layer, q, max_visible, shift, cos, sin, rotary_ndims, scale, splits, scores, partials);
    split_k_pass2<__nv_bfloat16><<<c.n_heads, kThreads, shared, stream>>>(
        c, layer, max_visible, splits, scores, partials, want_acc, want_last, query,
        static_cast<__nv_bfloat16*>(ctx));
  } else {
    split_k_pass1<__half><<<grid, kThreads, 0, stream>>>(
        c, layer, q, max_visible, shift, cos, sin, rotary_ndims, scale, splits, scores, partials);
    split_k_pass2<__half><<<c.n_heads, kThreads, shared, stream>>>(
        c, layer, max_visible, splits, scores, partials, want_acc, want_last, query,
        static_cast<__half*>(ctx));
  }
}

}  // namespace kvc::cuda
