// A session of the CUDA backend: the keys, values and signals in device slots, the rank tables
// mirrored from the host cache (TableMirror), and the forward pass as cuBLAS GEMMs (16-bit
// inputs, float32 accumulation and output) plus the kernels of kernels.cu. See docs/cuda.md.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda_model.h"
#include "engine/kv_cache.h"
#include "host_convert.h"
#include "kernels.h"
#include "table_mirror.h"

namespace kvc::cuda {
namespace {

// Tokens per block of a long prefill, as on the CPU: bounds the activations and the attention
// score scratch (n_heads * block * cache entries floats).
constexpr int64_t kMaxBlockTokens = 256;

class CudaSession final : public ComputeBackend {
 public:
  explicit CudaSession(const CudaModel& m)
      : m_(m), cfg_(m.cfg), mirror_(static_cast<size_t>(m.cfg.n_layers) * m.cfg.n_heads) {
    KVC_CUDA(cudaSetDevice(m_.device));
    KVC_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    KVC_CUDA(cudaEventCreateWithFlags(&packet_free_, cudaEventDisableTiming));
    KVC_CUBLAS(cublasCreate(&blas_));
    KVC_CUBLAS(cublasSetStream(blas_, stream_));
    n_heads_total_ = cfg_.n_layers * cfg_.n_heads;
    dc_.n_heads = cfg_.n_heads;
    dc_.head_dim = cfg_.head_dim;
    sizes_.resize(sizeof(int32_t) * n_heads_total_);
    KVC_CUDA(cudaMemset(sizes_.get(), 0, sizes_.bytes()));
    dc_.sizes = sizes_.get<int32_t>();
  }
  ~CudaSession() override {
    cudaSetDevice(m_.device);
    cudaStreamSynchronize(stream_);
    cublasDestroy(blas_);
    cudaEventDestroy(packet_free_);
    cudaStreamDestroy(stream_);
  }

  void run(const ForwardRequest& req, KvCache& cache) override {
    for (int64_t t = 0; t < req.n_tokens; ++t) {
      const int32_t id = req.tokens[t];
      if (id < 0 || id >= cfg_.vocab_size)
        fail(KVC_ERR_OUT_OF_RANGE, "token id " + std::to_string(id) + " at index " +
                                       std::to_string(t) + " is outside the vocabulary [0, " +
                                       std::to_string(cfg_.vocab_size) + ")");
    }
    KVC_CUDA(cudaSetDevice(m_.device));
    for (int64_t off = 0; off < req.n_tokens; off += kMaxBlockTokens)
      run_block(req, off, std::min(kMaxBlockTokens, req.n_tokens - off), cache);
    // One synchronisation per call: the caller's logits are ready and errors surface here.
    KVC_CUDA(cudaStreamSynchronize(stream_));
  }

  size_t kv_value_bytes() const override { return es(); }

  void fetch_signals(KvCache& cache, uint32_t signals) override {
    KVC_CUDA(cudaSetDevice(m_.device));
    if (dc_.slot_cap == 0) return;
    const size_t n = static_cast<size_t>(n_heads_total_) * dc_.slot_cap;
    const auto fetch = [&](const float* dev, auto&& host_of) {
      signal_host_.resize(n);
      KVC_CUDA(cudaMemcpyAsync(signal_host_.data(), dev, n * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_));
      KVC_CUDA(cudaStreamSynchronize(stream_));
      for (int i = 0; i < n_heads_total_; ++i) {
        HeadCache& h = cache.head_at(static_cast<size_t>(i));
        std::vector<float>& out = host_of(h);
        const float* src = &signal_host_[static_cast<size_t>(i) * dc_.slot_cap];
        for (size_t r = 0; r < h.slots().size(); ++r) out[r] = src[h.slots()[r]];
      }
    };
    if (signals & KVC_SIGNAL_ACC_ATTENTION)
      fetch(dc_.acc, [](HeadCache& h) -> std::vector<float>& { return h.acc_attention(); });
    if (signals & KVC_SIGNAL_LAST_ATTENTION)
      fetch(dc_.last, [](HeadCache& h) -> std::vector<float>& { return h.last_attention(); });
    if (signals & KVC_SIGNAL_KEY_NORM)
      fetch(dc_.norm, [](HeadCache& h) -> std::vector<float>& { return h.key_norms(); });
    const uint32_t derived = signals & HeadCache::kDerivedSignals;
    if (derived == 0) return;
    // Computed now from the rings and the stored keys, into per-slot scratch, then fetched.
    // The key-to-mean cosine reads the rank tables: send any plan applied since the last step.
    if (derived & KVC_SIGNAL_KEY_MEAN_COSINE) upload(cache, nullptr, 0);
    const size_t bytes = n * sizeof(float);
    float* window = nullptr;
    float* pivotal = nullptr;
    float* cosine = nullptr;
    if (derived & KVC_SIGNAL_WINDOW_ATTENTION) window = derived_scratch(0, bytes);
    if (derived & KVC_SIGNAL_PIVOTAL_COUNT) pivotal = derived_scratch(1, bytes);
    if (derived & KVC_SIGNAL_KEY_MEAN_COSINE) cosine = derived_scratch(2, bytes);
    derive_signals(dc_, n_heads_total_, m_.bf16(), window, pivotal, cosine, stream_);
    KVC_CUDA(cudaGetLastError());
    for (const uint32_t flag : {KVC_SIGNAL_WINDOW_ATTENTION, KVC_SIGNAL_PIVOTAL_COUNT,
                                KVC_SIGNAL_KEY_MEAN_COSINE})
      if (derived & flag)
        fetch(flag == KVC_SIGNAL_WINDOW_ATTENTION ? window
              : flag == KVC_SIGNAL_PIVOTAL_COUNT  ? pivotal
                                                  : cosine,
              [flag](HeadCache& h) -> std::vector<float>& { return h.derived(flag); });
  }

  void on_plan_applied(const kvc_plan& plan, const KvCache& cache) override {
    mirror_.plan_applied(plan, cache);
  }

  void on_heads_changed(int layer, int head) override {
    if (layer < 0 && head < 0) {
      mirror_.invalidate(-1);
      return;
    }
    for (int l = 0; l < cfg_.n_layers; ++l)
      for (int h = 0; h < cfg_.n_heads; ++h)
        if ((layer < 0 || l == layer) && (head < 0 || h == head))
          mirror_.invalidate(static_cast<int64_t>(l) * cfg_.n_heads + h);
  }

 private:
  size_t es() const { return 2; }  // bytes per 16-bit element

  // Keys, values and signals grow by copying each head's slots into a larger pitch.
  void ensure_slots(int64_t needed) {
    if (needed <= dc_.slot_cap) return;
    const int64_t cap = std::max<int64_t>({needed, 2 * dc_.slot_cap, 256});
    const size_t rows = static_cast<size_t>(n_heads_total_);
    const size_t kv_old = static_cast<size_t>(dc_.slot_cap) * cfg_.head_dim * es();
    const size_t kv_new = static_cast<size_t>(cap) * cfg_.head_dim * es();
    const auto grow = [&](DeviceBuffer& buf, size_t old_pitch, size_t new_pitch) {
      DeviceBuffer fresh;
      fresh.resize(rows * new_pitch);
      KVC_CUDA(cudaMemsetAsync(fresh.get(), 0, rows * new_pitch, stream_));
      if (old_pitch > 0)
        KVC_CUDA(cudaMemcpy2DAsync(fresh.get(), new_pitch, buf.get(), old_pitch, old_pitch, rows,
                                   cudaMemcpyDeviceToDevice, stream_));
      KVC_CUDA(cudaStreamSynchronize(stream_));  // before the old buffer is freed
      buf.swap(fresh);
    };
    grow(keys_, kv_old, kv_new);
    grow(values_, kv_old, kv_new);
    const size_t s_old = static_cast<size_t>(dc_.slot_cap) * sizeof(float);
    const size_t s_new = static_cast<size_t>(cap) * sizeof(float);
    grow(acc_, s_old, s_new);
    grow(last_, s_old, s_new);
    grow(norm_, s_old, s_new);
    if (dc_.window_ring) grow(window_ring_, s_old * dc_.window, s_new * dc_.window);
    if (dc_.pivotal_ring)
      grow(pivotal_ring_, s_old / sizeof(float) * dc_.window, s_new / sizeof(float) * dc_.window);
    dc_.window_ring = dc_.window_ring ? window_ring_.get<float>() : nullptr;
    dc_.pivotal_ring = dc_.pivotal_ring ? pivotal_ring_.get<uint8_t>() : nullptr;
    dc_.keys = keys_.get();
    dc_.values = values_.get();
    dc_.acc = acc_.get<float>();
    dc_.last = last_.get<float>();
    dc_.norm = norm_.get<float>();
    dc_.slot_cap = cap;
  }

  // The windowed signals' rings, allocated (empty) the first time a request asks for them;
  // the window is the session's, fixed when its policy was created.
  void ensure_rings(uint32_t signals, int32_t window) {
    const bool want_window = window > 0 && (signals & KVC_SIGNAL_WINDOW_ATTENTION) != 0;
    const bool want_pivotal = window > 0 && (signals & KVC_SIGNAL_PIVOTAL_COUNT) != 0;
    const int32_t w = want_window || want_pivotal ? window : 0;
    if (want_window == (dc_.window_ring != nullptr) &&
        want_pivotal == (dc_.pivotal_ring != nullptr) && w == dc_.window)
      return;
    const size_t cells = static_cast<size_t>(n_heads_total_) * dc_.slot_cap * window;
    KVC_CUDA(cudaStreamSynchronize(stream_));
    window_ring_.release();
    pivotal_ring_.release();
    dc_.window_ring = nullptr;
    dc_.pivotal_ring = nullptr;
    dc_.window = w;
    if (want_window) {
      window_ring_.resize(std::max<size_t>(cells, 1) * sizeof(float));
      KVC_CUDA(cudaMemsetAsync(window_ring_.get(), 0, cells * sizeof(float), stream_));
      dc_.window_ring = window_ring_.get<float>();
    }
    if (want_pivotal) {
      pivotal_ring_.resize(std::max<size_t>(cells, 1));
      KVC_CUDA(cudaMemsetAsync(pivotal_ring_.get(), 0, cells, stream_));
      dc_.pivotal_ring = pivotal_ring_.get<uint8_t>();
    }
  }

  float* derived_scratch(int which, size_t bytes) {
    DeviceBuffer& b = derived_[which];
    if (b.bytes() < bytes) b.resize(bytes);
    return b.get<float>();
  }

  // Tables are only a mirror of the host: grown empty, then re-sent whole.
  void ensure_tables(int64_t needed) {
    if (needed <= dc_.table_cap) return;
    const int64_t cap = std::max<int64_t>({needed, 2 * dc_.table_cap, 256});
    KVC_CUDA(cudaStreamSynchronize(stream_));
    const size_t bytes = static_cast<size_t>(n_heads_total_) * cap * sizeof(int32_t);
    slot_table_.release();
    pos_table_.release();
    gather_scratch_.release();
    slot_table_.resize(bytes);
    pos_table_.resize(bytes);
    gather_scratch_.resize(2 * bytes);
    dc_.slot_table = slot_table_.get<int32_t>();
    dc_.pos_table = pos_table_.get<int32_t>();
    dc_.table_cap = cap;
    mirror_.invalidate(-1);
  }

  void ensure_rotary(int64_t n_positions) {
    if (n_positions <= rotary_n_ || cfg_.rotary_ndims == 0) return;
    const int64_t n = std::max<int64_t>({n_positions, 2 * rotary_n_, 4096});
    std::vector<float> c, s;
    rotary_table(cfg_.rotary_ndims, cfg_.rotary_base, n, c, s);
    KVC_CUDA(cudaStreamSynchronize(stream_));
    cos_.release();
    sin_.release();
    cos_.resize(c.size() * sizeof(float));
    sin_.resize(s.size() * sizeof(float));
    KVC_CUDA(cudaMemcpy(cos_.get(), c.data(), c.size() * sizeof(float), cudaMemcpyHostToDevice));
    KVC_CUDA(cudaMemcpy(sin_.get(), s.data(), s.size() * sizeof(float), cudaMemcpyHostToDevice));
    rotary_n_ = n;
  }

  void ensure_activations(int64_t n) {
    if (n <= act_tokens_) return;
    const size_t H = static_cast<size_t>(cfg_.hidden_size);
    const size_t I = static_cast<size_t>(cfg_.intermediate_size);
    const size_t N = static_cast<size_t>(n);
    x_.resize(N * H * 4);
    h_.resize(N * H * es());
    qkv_.resize(N * 3 * H * 4);
    q_.resize(N * H * 4);
    ctx_.resize(N * H * es());
    attn_.resize(N * H * 4);
    mlp_.resize(N * I * 4);
    mlp16_.resize(N * I * es());
    mlp2_.resize(N * H * 4);
    act_tokens_ = n;
  }

  // Sends the table changes and the block's token ids in one pinned packet.
  void upload(const KvCache& cache, const int32_t* tokens, int64_t n) {
    mirror_.prepare(cache, upload_);
    const size_t L = static_cast<size_t>(n_heads_total_);
    const size_t words = static_cast<size_t>(n) + 5 * L + 1 + upload_.gather_ranks.size() +
                         2 * upload_.slots.size();
    KVC_CUDA(cudaEventSynchronize(packet_free_));  // the previous packet has left
    packet_host_.resize(words * sizeof(int32_t));
    packet_dev_.resize(words * sizeof(int32_t));
    int32_t* base = packet_host_.get<int32_t>();
    int32_t* p = base;
    const auto put = [&p](const std::vector<int32_t>& v) {
      std::memcpy(p, v.data(), v.size() * sizeof(int32_t));
      p += v.size();
    };
    if (n > 0) std::memcpy(p, tokens, static_cast<size_t>(n) * sizeof(int32_t));
    p += n;
    put(upload_.sizes);
    put(upload_.first);
    put(upload_.entry_offset);
    put(upload_.gather_offset);
    put(upload_.gather_count);
    put(upload_.slots);
    put(upload_.positions);
    put(upload_.gather_ranks);
    KVC_CUDA(cudaMemcpyAsync(packet_dev_.get(), base, words * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
    KVC_CUDA(cudaEventRecord(packet_free_, stream_));
    const int32_t* d = packet_dev_.get<int32_t>();
    tokens_dev_ = d;
    const int32_t* sizes = d + n;
    const int32_t* first = sizes + L;
    const int32_t* entry_offset = first + L;
    const int32_t* gather_offset = entry_offset + L + 1;
    const int32_t* gather_count = gather_offset + L;
    const int32_t* slots = gather_count + L;
    const int32_t* positions = slots + upload_.slots.size();
    const int32_t* gather_ranks = positions + upload_.positions.size();
    if (upload_.any_gather)
      gather_tables(dc_, n_heads_total_, gather_offset, gather_count, gather_ranks,
                    gather_scratch_.get<int32_t>(), stream_);
    write_tables(dc_, n_heads_total_, sizes, first, entry_offset, slots, positions, stream_);
  }

  void gemm(const void* w, int out, int in, const void* x, int n, float* y) {
    const float one = 1.0f, zero = 0.0f;
    // Row-major y[n][out] = x[n][in] · w[out][in]^T, i.e. column-major y^T = w^T(op T) · x^T.
    KVC_CUBLAS(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w,
                            m_.cuda_type(), in, x, m_.cuda_type(), in, &zero, y, CUDA_R_32F, out,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  void run_block(const ForwardRequest& req, int64_t off, int64_t n, KvCache& cache) {
    const int H = cfg_.n_heads;
    const int hidden = cfg_.hidden_size, inter = cfg_.intermediate_size;
    const bool bf16 = m_.bf16();
    const int64_t first_position = req.first_position + off;
    // Host metadata first: it decides the slots the device writes.
    int64_t max_slots = 0, max_size = 0;
    for (int l = 0; l < cfg_.n_layers; ++l)
      for (int h = 0; h < H; ++h) {
        HeadCache& hc = cache.head(l, h);
        for (int64_t t = 0; t < n; ++t)
          hc.append(nullptr, nullptr, first_position + t, req.tokens[off + t], false);
        max_slots = std::max<int64_t>(max_slots, hc.n_slots());
        max_size = std::max(max_size, hc.size());
      }
    ensure_rings(req.signals, cache.signal_window());
    ensure_slots(max_slots);
    ensure_tables(max_size);
    ensure_rotary(std::max(max_size, first_position + n) + 1);
    ensure_activations(n);
    scores_.resize(static_cast<size_t>(H) * n * max_size * sizeof(float));
    upload(cache, req.tokens + off, n);

    const bool shift = req.positions == KVC_POSITIONS_SHIFT;
    const bool want_acc = (req.signals & KVC_SIGNAL_ACC_ATTENTION) != 0;
    const bool is_last_block = off + n == req.n_tokens;
    const bool want_last = (req.signals & KVC_SIGNAL_LAST_ATTENTION) != 0 && is_last_block;
    const float scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
    const int N = static_cast<int>(n);
    float* x = x_.get<float>();
    embed(m_.embed_in, bf16, tokens_dev_, N, hidden, x, stream_);
    for (int l = 0; l < cfg_.n_layers; ++l) {
      const DeviceLayer& w = m_.layers[static_cast<size_t>(l)];
      layer_norm(x, w.ln1_w, w.ln1_b, cfg_.layer_norm_eps, N, hidden, h_.get(), bf16, stream_);
      gemm(w.qkv, 3 * hidden, hidden, h_.get(), N, qkv_.get<float>());
      append_kv(dc_, l, qkv_.get<float>(), w.qkv_b, N, first_position, shift,
                cos_.get<float>(), sin_.get<float>(), cfg_.rotary_ndims, bf16, q_.get<float>(),
                stream_);
      attention(dc_, l, q_.get<float>(), N, max_size, shift, cos_.get<float>(),
                sin_.get<float>(), cfg_.rotary_ndims, scale, want_acc, want_last, queries_,
                bf16, scores_.get<float>(), ctx_.get(), stream_);
      gemm(w.attn_out, hidden, hidden, ctx_.get(), N, attn_.get<float>());
      if (!cfg_.use_parallel_residual)
        residual(x, attn_.get<float>(), w.attn_out_b, nullptr, nullptr, N, hidden, stream_);
      layer_norm(x, w.ln2_w, w.ln2_b, cfg_.layer_norm_eps, N, hidden, h_.get(), bf16, stream_);
      gemm(w.fc_in, inter, hidden, h_.get(), N, mlp_.get<float>());
      bias_gelu(mlp_.get<float>(), w.fc_in_b, N, inter, mlp16_.get(), bf16, stream_);
      gemm(w.fc_out, hidden, inter, mlp16_.get(), N, mlp2_.get<float>());
      if (cfg_.use_parallel_residual)
        residual(x, attn_.get<float>(), w.attn_out_b, mlp2_.get<float>(), w.fc_out_b, N, hidden,
                 stream_);
      else
        residual(x, nullptr, nullptr, mlp2_.get<float>(), w.fc_out_b, N, hidden, stream_);
    }
    KVC_CUDA(cudaGetLastError());
    queries_ += n;  // ring rows only need consecutive numbers, so this never resets

    if (req.which == KVC_LOGITS_NONE || req.logits == nullptr) return;
    if (req.which == KVC_LOGITS_LAST && !is_last_block) return;
    const int64_t first_row = req.which == KVC_LOGITS_LAST ? n - 1 : 0;
    const int rows = static_cast<int>(n - first_row);
    const int64_t vocab = cfg_.vocab_size;
    layer_norm(x + first_row * hidden, m_.final_ln_w, m_.final_ln_b, cfg_.layer_norm_eps, rows,
               hidden, h_.get(), bf16, stream_);
    logits_.resize(static_cast<size_t>(rows) * vocab * sizeof(float));
    gemm(m_.embed_out, static_cast<int>(vocab), hidden, h_.get(), rows, logits_.get<float>());
    float* out = req.which == KVC_LOGITS_LAST ? req.logits
                                               : req.logits + static_cast<size_t>(off) * vocab;
    KVC_CUDA(cudaMemcpyAsync(out, logits_.get(), static_cast<size_t>(rows) * vocab * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
    KVC_CUDA(cudaGetLastError());
  }

  const CudaModel& m_;
  const ModelConfig& cfg_;
  int n_heads_total_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t packet_free_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  TableMirror mirror_;
  TableUpload upload_;
  DeviceCache dc_;
  DeviceBuffer keys_, values_, acc_, last_, norm_, slot_table_, pos_table_, sizes_,
      gather_scratch_;
  DeviceBuffer window_ring_, pivotal_ring_, derived_[3];
  int64_t queries_ = 0;
  DeviceBuffer cos_, sin_;
  int64_t rotary_n_ = 0;
  DeviceBuffer x_, h_, qkv_, q_, ctx_, attn_, mlp_, mlp16_, mlp2_, scores_, logits_;
  int64_t act_tokens_ = 0;
  PinnedBuffer packet_host_;
  DeviceBuffer packet_dev_;
  const int32_t* tokens_dev_ = nullptr;
  std::vector<float> signal_host_;
};

}  // namespace

std::unique_ptr<ComputeBackend> CudaModel::create_session() {
  return std::make_unique<CudaSession>(*this);
}

}  // namespace kvc::cuda
