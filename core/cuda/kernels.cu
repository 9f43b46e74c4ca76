// The CUDA backend's kernels. Plain CUDA C++, one 16-bit storage type per instantiation
// (float16 or bfloat16); arithmetic and accumulation are in float32 throughout.
#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "device_math.cuh"

namespace kvc::cuda {
namespace {

using namespace device;  // to_f, from_f, warp reductions, kThreads (device_math.cuh)

// Block-wide reductions for blockDim.x == kThreads; `red` holds kWarps floats.
__device__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = threadIdx.x < kWarps ? red[threadIdx.x] : 0.0f;
  if (threadIdx.x < 32) r = warp_sum(r);
  if (threadIdx.x == 0) red[0] = r;
  __syncthreads();
  r = red[0];
  __syncthreads();  // red is reused by the next call
  return r;
}
__device__ float block_max(float v, float* red) {
  v = warp_max(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = threadIdx.x < kWarps ? red[threadIdx.x] : -INFINITY;
  if (threadIdx.x < 32) r = warp_max(r);
  if (threadIdx.x == 0) red[0] = r;
  __syncthreads();
  r = red[0];
  __syncthreads();
  return r;
}

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8));
}

template <typename T>
__global__ void embed_kernel(const T* table, const int32_t* tokens, int hidden, float* x) {
  const T* row = table + static_cast<size_t>(tokens[blockIdx.x]) * hidden;
  float* out = x + static_cast<size_t>(blockIdx.x) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[i] = to_f(row[i]);
}

// Two passes over the row (mean, then centred variance) as the CPU does, in float32.
template <typename T>
__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float eps,
                                  int dim, T* out) {
  __shared__ float red[kWarps];
  const float* row = x + static_cast<size_t>(blockIdx.x) * dim;
  float s = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kThreads) s += row[i];
  const float mean = block_sum(s, red) / static_cast<float>(dim);
  float v = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    const float d = row[i] - mean;
    v += d * d;
  }
  const float var = block_sum(v, red) / static_cast<float>(dim);
  const float inv = rsqrtf(var + eps);
  T* o = out + static_cast<size_t>(blockIdx.x) * dim;
  for (int i = threadIdx.x; i < dim; i += kThreads)
    o[i] = from_f<T>((row[i] - mean) * inv * w[i] + b[i]);
}

__global__ void gather_tables_kernel(DeviceCache c, const int32_t* offset, const int32_t* count,
                                     const int32_t* ranks, int32_t* scratch) {
  const int i = blockIdx.x;
  const int n = count[i];
  if (n < 0) return;
  const size_t base = static_cast<size_t>(i) * c.table_cap;
  int32_t* s_slot = scratch + 3 * base;
  int32_t* s_pos = s_slot + c.table_cap;
  int32_t* s_tok = s_pos + c.table_cap;
  const int32_t* r = ranks + offset[i];
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    s_slot[j] = c.slot_table[base + r[j]];
    s_pos[j] = c.pos_table[base + r[j]];
    if (c.tok_table) s_tok[j] = c.tok_table[base + r[j]];
  }
  __syncthreads();  // every read of the old table precedes the first write
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    c.slot_table[base + j] = s_slot[j];
    c.pos_table[base + j] = s_pos[j];
    if (c.tok_table) c.tok_table[base + j] = s_tok[j];
  }
}

__global__ void write_tables_kernel(DeviceCache c, const int32_t* sizes, const int32_t* first,
                                    const int32_t* entry_offset, const int32_t* slots,
                                    const int32_t* positions, const int32_t* tokens) {
  const int i = blockIdx.x;
  const size_t base = static_cast<size_t>(i) * c.table_cap;
  const int f = first[i], size = sizes[i], e = entry_offset[i];
  for (int r = f + threadIdx.x; r < size; r += blockDim.x) {
    c.slot_table[base + r] = slots[e + r - f];
    c.pos_table[base + r] = positions[e + r - f];
    if (c.tok_table && tokens) c.tok_table[base + r] = tokens[e + r - f];
  }
  if (threadIdx.x == 0) c.sizes[i] = size;
}

// rotate_half on the first `rot` channels of v (read from `src`, fp32) for channel d.
__device__ __forceinline__ float rotate(const float* src, int d, int half, int rot,
                                        const float* cos_row, const float* sin_row) {
  if (d < half) return src[d] * cos_row[d] - src[d + half] * sin_row[d];
  if (d < rot) return src[d] * cos_row[d - half] + src[d - half] * sin_row[d - half];
  return src[d];
}

// grid (n_heads, n): one block per (head, new token).
template <typename T>
__global__ void append_kv_kernel(DeviceCache c, int layer, const float* qkv, const float* bias,
                                 int n, int64_t first_position, bool shift, const float* cos,
                                 const float* sin, int rot, float* q) {
  __shared__ float red[kWarps];
  __shared__ float qs[kMaxHeadDim];
  const int h = blockIdx.x, t = blockIdx.y, hd = c.head_dim;
  const int hidden = c.n_heads * hd;
  const int head = layer * c.n_heads + h;
  const int rank = c.sizes[head] - n + t;
  const int slot = c.slot_table[static_cast<size_t>(head) * c.table_cap + rank];
  const float* row = qkv + static_cast<size_t>(t) * 3 * hidden + static_cast<size_t>(h) * 3 * hd;
  const float* b = bias + static_cast<size_t>(h) * 3 * hd;
  const size_t at = (static_cast<size_t>(head) * c.slot_cap + slot) * hd;
  T* keys = static_cast<T*>(c.keys);
  T* values = static_cast<T*>(c.values);
  float norm = 0.0f;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    const float k = row[hd + d] + b[hd + d];
    keys[at + d] = from_f<T>(k);
    values[at + d] = from_f<T>(row[2 * hd + d] + b[2 * hd + d]);
    norm += k * k;
    qs[d] = row[d] + b[d];
  }
  norm = block_sum(norm, red);  // also orders the qs writes before the reads below
  const int half = rot / 2;
  const int64_t qpos = shift ? rank : first_position + t;
  const float* cr = cos + qpos * half;
  const float* sr = sin + qpos * half;
  float* qo = q + static_cast<size_t>(t) * hidden + static_cast<size_t>(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qo[d] = rotate(qs, d, half, rot, cr, sr);
  if (threadIdx.x == 0) {
    const size_t s = static_cast<size_t>(head) * c.slot_cap + slot;
    c.norm[s] = sqrtf(norm);
    c.acc[s] = 0.0f;
    c.last[s] = 0.0f;
    if (c.protect) c.protect[s] = 0;
  }
  // The slot's rings start empty: no earlier query attended this entry.
  const size_t ring = (static_cast<size_t>(head) * c.slot_cap + slot) * c.window;
  for (int j = threadIdx.x; j < c.window; j += blockDim.x) {
    if (c.window_ring) c.window_ring[ring + j] = 0.0f;
    if (c.pivotal_ring) c.pivotal_ring[ring + j] = 0;
  }
}

// grid (n_heads, n): one block per (head, query). Scores go through a float32 scratch row.
template <typename T>
__global__ void attention_kernel(DeviceCache c, int layer, const float* q, int n,
                                 int64_t max_visible, bool shift, const float* cos,
                                 const float* sin, int rot, float scale, bool want_acc,
                                 bool want_last, int64_t first_query, float* scores, T* ctx) {
  __shared__ float red[kWarps];
  __shared__ float qs[kMaxHeadDim];
  __shared__ float part[kWarps][kMaxHeadDim];
  const int h = blockIdx.x, t = blockIdx.y, hd = c.head_dim, half = rot / 2;
  const int hidden = c.n_heads * hd;
  const int head = layer * c.n_heads + h;
  const int visible = c.sizes[head] - n + t + 1;
  const int32_t* st = c.slot_table + static_cast<size_t>(head) * c.table_cap;
  const int32_t* pt = c.pos_table + static_cast<size_t>(head) * c.table_cap;
  const T* keys = static_cast<const T*>(c.keys) + static_cast<size_t>(head) * c.slot_cap * hd;
  const T* values = static_cast<const T*>(c.values) + static_cast<size_t>(head) * c.slot_cap * hd;
  float* sc = scores + (static_cast<size_t>(h) * n + t) * max_visible;
  const float* qrow = q + static_cast<size_t>(t) * hidden + static_cast<size_t>(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = qrow[d];
  __syncthreads();

  // Scores, rotating each key by its rank (shift) or original position.
  float local_max = -INFINITY;
  for (int r = threadIdx.x; r < visible; r += blockDim.x) {
    const T* k = keys + static_cast<size_t>(st[r]) * hd;
    const int64_t kpos = shift ? r : pt[r];
    const float* cr = cos + kpos * half;
    const float* sr = sin + kpos * half;
    float s = 0.0f;
    for (int i = 0; i < half; ++i) {
      const float k1 = to_f(k[i]), k2 = to_f(k[i + half]);
      s += qs[i] * (k1 * cr[i] - k2 * sr[i]) + qs[i + half] * (k2 * cr[i] + k1 * sr[i]);
    }
    for (int i = rot; i < hd; ++i) s += qs[i] * to_f(k[i]);
    s *= scale;
    sc[r] = s;
    local_max = fmaxf(local_max, s);
  }
  const float m = block_max(local_max, red);
  float local_sum = 0.0f;
  for (int r = threadIdx.x; r < visible; r += blockDim.x) {
    const float e = expf(sc[r] - m);
    sc[r] = e;
    local_sum += e;
  }
  const float inv = 1.0f / block_sum(local_sum, red);  // its barriers publish sc

  // Probabilities times values: warp w takes ranks w, w + kWarps, ...; lane owns channels
  // lane, lane + 32, ...
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float out[kMaxHeadDim / 32];
#pragma unroll
  for (int j = 0; j < kMaxHeadDim / 32; ++j) out[j] = 0.0f;
  const bool last_query = want_last && t == n - 1;
  const bool in_window = c.window > 0 && t >= n - c.window;
  const size_t row = in_window ? static_cast<size_t>((first_query + t) % c.window) : 0;
  for (int r = warp; r < visible; r += kWarps) {
    const float p = sc[r] * inv;
    const int slot = st[r];
    if (lane == 0) {
      const size_t s = static_cast<size_t>(head) * c.slot_cap + slot;
      if (want_acc) atomicAdd(&c.acc[s], p);
      if (last_query) c.last[s] = p;
      if (in_window) {
        const size_t at = s * c.window + row;
        if (c.window_ring) c.window_ring[at] = p;
        // As the CPU: at least uniform, compared in double.
        if (c.pivotal_ring)
          c.pivotal_ring[at] = static_cast<double>(p) * static_cast<double>(visible) >= 1.0;
      }
    }
    const T* v = values + static_cast<size_t>(slot) * hd;
#pragma unroll
    for (int j = 0; j < kMaxHeadDim / 32; ++j) {
      const int d = lane + 32 * j;
      if (d < hd) out[j] += p * to_f(v[d]);
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxHeadDim / 32; ++j) {
    const int d = lane + 32 * j;
    if (d < hd) part[warp][d] = out[j];
  }
  __syncthreads();
  T* o = ctx + static_cast<size_t>(t) * hidden + static_cast<size_t>(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float s = 0.0f;
    for (int w = 0; w < kWarps; ++w) s += part[w][d];
    o[d] = from_f<T>(s);
  }
}

// grid (n_heads_total): one block per (layer, head) over its ranks.
template <typename T>
__global__ void derive_signals_kernel(DeviceCache c, float* window, float* pivotal,
                                      float* cosine) {
  __shared__ double mean[kMaxHeadDim];
  __shared__ double mean_norm;
  const int head = blockIdx.x, hd = c.head_dim, size = c.sizes[head];
  const int32_t* st = c.slot_table + static_cast<size_t>(head) * c.table_cap;
  const size_t base = static_cast<size_t>(head) * c.slot_cap;
  for (int r = threadIdx.x; r < size; r += blockDim.x) {
    const size_t s = base + st[r];
    const size_t ring = s * c.window;
    if (window && c.window_ring) {
      double sum = 0.0;
      for (int j = 0; j < c.window; ++j) sum += c.window_ring[ring + j];
      window[s] = static_cast<float>(sum / c.window);
    }
    if (pivotal && c.pivotal_ring) {
      int count = 0;
      for (int j = 0; j < c.window; ++j) count += c.pivotal_ring[ring + j];
      pivotal[s] = static_cast<float>(count);
    }
  }
  if (cosine == nullptr || size == 0) return;
  const T* keys = static_cast<const T*>(c.keys) + base * hd;
  // Pass 1: each key's norm (kept in `cosine` until pass 3 overwrites it).
  for (int r = threadIdx.x; r < size; r += blockDim.x) {
    const T* k = keys + static_cast<size_t>(st[r]) * hd;
    double n2 = 0.0;
    for (int d = 0; d < hd; ++d) n2 += static_cast<double>(to_f(k[d])) * to_f(k[d]);
    cosine[base + st[r]] = static_cast<float>(sqrt(n2));
  }
  __syncthreads();
  // Pass 2: the mean of the unit keys, one channel per thread.
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    double m = 0.0;
    for (int r = 0; r < size; ++r) {
      const float norm = cosine[base + st[r]];
      if (norm > 0.0f) m += static_cast<double>(to_f(keys[static_cast<size_t>(st[r]) * hd + d])) / norm;
    }
    mean[d] = m / size;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double n2 = 0.0;
    for (int d = 0; d < hd; ++d) n2 += mean[d] * mean[d];
    mean_norm = sqrt(n2);
  }
  __syncthreads();
  // Pass 3: the cosines.
  for (int r = threadIdx.x; r < size; r += blockDim.x) {
    const T* k = keys + static_cast<size_t>(st[r]) * hd;
    double dot = 0.0;
    for (int d = 0; d < hd; ++d) dot += to_f(k[d]) * mean[d];
    const double denominator = static_cast<double>(cosine[base + st[r]]) * mean_norm;
    cosine[base + st[r]] = denominator > 0.0 ? static_cast<float>(dot / denominator) : 0.0f;
  }
}

template <typename T>
__global__ void bias_gelu_kernel(const float* in, const float* bias, int64_t total, int width,
                                 T* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = in[i] + bias[i % width];
    out[i] = from_f<T>(0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)));
  }
}

__global__ void residual_kernel(float* x, const float* a, const float* ab, const float* m,
                                const float* mb, int64_t total, int hidden) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % hidden);
    if (m == nullptr)
      x[i] = x[i] + (a[i] + ab[c]);
    else if (a == nullptr)
      x[i] = (m[i] + mb[c]) + x[i];
    else
      x[i] = ((m[i] + mb[c]) + (a[i] + ab[c])) + x[i];
  }
}

}  // namespace

void embed(const void* table, bool bf16, const int32_t* tokens, int n, int hidden, float* x,
           cudaStream_t stream) {
  if (bf16)
    embed_kernel<<<n, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(table), tokens,
                                             hidden, x);
  else
    embed_kernel<<<n, kThreads, 0, stream>>>(static_cast<const __half*>(table), tokens, hidden,
                                             x);
}

void layer_norm(const float* x, const float* w, const float* b, float eps, int n, int dim,
                void* out, bool bf16, cudaStream_t stream) {
  if (bf16)
    layer_norm_kernel<<<n, kThreads, 0, stream>>>(x, w, b, eps, dim,
                                                  static_cast<__nv_bfloat16*>(out));
  else
    layer_norm_kernel<<<n, kThreads, 0, stream>>>(x, w, b, eps, dim, static_cast<__half*>(out));
}

void gather_tables(const DeviceCache& c, int n_heads_total, const int32_t* offset,
                   const int32_t* count, const int32_t* gather_ranks, int32_t* scratch,
                   cudaStream_t stream) {
  gather_tables_kernel<<<n_heads_total, kThreads, 0, stream>>>(c, offset, count, gather_ranks,
                                                               scratch);
}

void write_tables(const DeviceCache& c, int n_heads_total, const int32_t* sizes,
                  const int32_t* first, const int32_t* entry_offset, const int32_t* slots,
                  const int32_t* positions, const int32_t* tokens, cudaStream_t stream) {
  write_tables_kernel<<<n_heads_total, 64, 0, stream>>>(c, sizes, first, entry_offset, slots,
                                                        positions, tokens);
}

void append_kv(const DeviceCache& c, int layer, const float* qkv, const float* qkv_bias, int n,
               int64_t first_position, bool shift, const float* cos, const float* sin,
               int rotary_ndims, bool bf16, float* q, cudaStream_t stream) {
  const dim3 grid(c.n_heads, n);
  if (bf16)
    append_kv_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
        c, layer, qkv, qkv_bias, n, first_position, shift, cos, sin, rotary_ndims, q);
  else
    append_kv_kernel<__half><<<grid, kThreads, 0, stream>>>(
        c, layer, qkv, qkv_bias, n, first_position, shift, cos, sin, rotary_ndims, q);
}

void attention(const DeviceCache& c, int layer, const float* q, int n, int64_t max_visible,
               bool shift, const float* cos, const float* sin, int rotary_ndims, float scale,
               bool want_acc, bool want_last, int64_t first_query, bool bf16, float* scores,
               void* ctx, cudaStream_t stream) {
  const dim3 grid(c.n_heads, n);
  if (bf16)
    attention_kernel<<<grid, kThreads, 0, stream>>>(c, layer, q, n, max_visible, shift, cos, sin,
                                                    rotary_ndims, scale, want_acc, want_last,
                                                    first_query, scores,
                                                    static_cast<__nv_bfloat16*>(ctx));
  else
    attention_kernel<<<grid, kThreads, 0, stream>>>(c, layer, q, n, max_visible, shift, cos, sin,
                                                    rotary_ndims, scale, want_acc, want_last,
                                                    first_query, scores,
                                                    static_cast<__half*>(ctx));
}

void derive_signals(const DeviceCache& c, int n_heads_total, bool bf16, float* window,
                    float* pivotal, float* cosine, cudaStream_t stream) {
  if (bf16)
    derive_signals_kernel<__nv_bfloat16><<<n_heads_total, kThreads, 0, stream>>>(c, window,
                                                                                pivotal, cosine);
  else
    derive_signals_kernel<__half><<<n_heads_total, kThreads, 0, stream>>>(c, window, pivotal,
                                                                         cosine);
}

void bias_gelu(const float* in, const float* bias, int n, int width, void* out, bool bf16,
               cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(n) * width;
  if (bf16)
    bias_gelu_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
        in, bias, total, width, static_cast<__nv_bfloat16*>(out));
  else
    bias_gelu_kernel<<<blocks_for(total), kThreads, 0, stream>>>(in, bias, total, width,
                                                                 static_cast<__half*>(out));
}

void residual(float* x, const float* a, const float* a_bias, const float* m,
              const float* m_bias, int n, int hidden, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(n) * hidden;
  residual_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, a, a_bias, m, m_bias, total,
                                                              hidden);
}

}  // namespace kvc::cuda
