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
#include "cuda_options.h"
#include "device_rule.h"
#include "engine/kv_cache.h"
#include "host_convert.h"
#include "kernels.h"
#include "policy/rule_engine.h"
#include "rule_kernels.h"
#include "table_mirror.h"

namespace kvc::cuda {
namespace {

// Tokens per block of a long prefill, as on the CPU: bounds the activations and the attention
// score scratch (n_heads * block * cache entries floats).
constexpr int64_t kMaxBlockTokens = 256;
// Split-K decode attention: at most this many splits per head.
constexpr int kMaxSplits = 64;
// The device rule hands the host each head's first evicted ranks in one small copy; a head
// evicting more (a prefill) costs a second copy of the full lists.
constexpr int kPacketRanks = 4;

class CudaSession final : public ComputeBackend {
 public:
  explicit CudaSession(const CudaModel& m)
      : m_(m),
        cfg_(m.cfg),
        opt_(CudaOptions::from_environment()),
        mirror_(static_cast<size_t>(m.cfg.n_layers) * m.cfg.n_heads) {
    KVC_CUDA(cudaSetDevice(m_.device));
    KVC_CUDA(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, m_.device));
    KVC_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    KVC_CUDA(cudaEventCreateWithFlags(&packet_free_, cudaEventDisableTiming));
    KVC_CUBLAS(cublasCreate(&blas_));
    KVC_CUBLAS(cublasSetStream(blas_, stream_));
    if (opt_.graphs) {  // cuBLAS must not allocate while a graph is captured
      blas_workspace_.resize(size_t{32} << 20);
      KVC_CUBLAS(cublasSetWorkspace(blas_, blas_workspace_.get(), blas_workspace_.bytes()));
    }
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
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
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
    if (staged_logits_dst_ != nullptr) {  // a graph wrote them to pinned memory
      std::memcpy(staged_logits_dst_, logits_host_.get(), staged_logits_bytes_);
      staged_logits_dst_ = nullptr;
    }
  }

  size_t kv_value_bytes() const override { return es(); }

  void fetch_signals(KvCache& cache, uint32_t signals) override {
    KVC_CUDA(cudaSetDevice(m_.device));
    if (dc_.slot_cap == 0) return;
    const size_t n = static_cast<size_t>(n_heads_total_) * dc_.slot_cap;
    if (opt_.live_signals) upload(cache, nullptr, 0);  // the gather reads the rank tables
    const auto fetch = [&](const float* dev, auto&& host_of) {
      if (opt_.live_signals) return fetch_live(cache, dev, host_of);
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
      reset_rule_state();  // a reset: the rule's lazy state starts over (RuleEngine::reset)
      return;
    }
    for (int l = 0; l < cfg_.n_layers; ++l)
      for (int h = 0; h < cfg_.n_heads; ++h)
        if ((layer < 0 || l == layer) && (head < 0 || h == head))
          mirror_.invalidate(static_cast<int64_t>(l) * cfg_.n_heads + h);
  }

 private:
  size_t es() const { return 2; }  // bytes per 16-bit element

  // Live entries only: one gather on the device into rank order, one copy of sum(sizes)
  // floats, scattered into the host cache's rank order.
  template <class HostOf>
  void fetch_live(KvCache& cache, const float* by_slot, HostOf&& host_of) {
    const size_t G = static_cast<size_t>(n_heads_total_);
    live_offsets_host_.resize((G + 1) * sizeof(int64_t));
    int64_t* off = live_offsets_host_.get<int64_t>();
    off[0] = 0;
    for (size_t i = 0; i < G; ++i) off[i + 1] = off[i] + cache.head_at(i).size();
    const size_t total = static_cast<size_t>(off[G]);
    live_offsets_dev_.resize((G + 1) * sizeof(int64_t));
    live_dev_.resize(std::max<size_t>(total, 1) * sizeof(float));
    live_host_.resize(std::max<size_t>(total, 1) * sizeof(float));
    KVC_CUDA(cudaMemcpyAsync(live_offsets_dev_.get(), off, (G + 1) * sizeof(int64_t),
                             cudaMemcpyHostToDevice, stream_));
    gather_live(dc_, n_heads_total_, by_slot, live_offsets_dev_.get<int64_t>(),
                live_dev_.get<float>(), stream_);
    KVC_CUDA(cudaGetLastError());
    KVC_CUDA(cudaMemcpyAsync(live_host_.get(), live_dev_.get(), total * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
    KVC_CUDA(cudaStreamSynchronize(stream_));
    const float* src = live_host_.get<float>();
    for (size_t i = 0; i < G; ++i) {
      std::vector<float>& out = host_of(cache.head_at(i));
      std::copy(src + off[i], src + off[i + 1], out.begin());
    }
  }

  // ---- The device rule (KVC_CUDA_RULES=device) --------------------------------------------

 public:
  bool runs_rules() const override { return opt_.device_rules; }

  bool decide_rule(RuleEngine& engine, int64_t n_new, KvCache& cache) override {
    KVC_CUDA(cudaSetDevice(m_.device));
    if (dc_.slot_cap == 0 || dc_.table_cap == 0) return false;
    const kvc_rule& r = engine.rule();
    bind_rule(engine);
    upload(cache, nullptr, 0);  // tables current (nothing to send right after a step)
    const uint32_t derived = (r.heavy_signal | r.tie_signal) & HeadCache::kDerivedSignals;
    float* derived_by_flag[3] = {nullptr, nullptr, nullptr};
    if (derived != 0) {
      const size_t bytes = static_cast<size_t>(n_heads_total_) * dc_.slot_cap * sizeof(float);
      if (derived & KVC_SIGNAL_WINDOW_ATTENTION) derived_by_flag[0] = derived_scratch(0, bytes);
      if (derived & KVC_SIGNAL_PIVOTAL_COUNT) derived_by_flag[1] = derived_scratch(1, bytes);
      if (derived & KVC_SIGNAL_KEY_MEAN_COSINE) derived_by_flag[2] = derived_scratch(2, bytes);
      derive_signals(dc_, n_heads_total_, m_.bf16(), derived_by_flag[0], derived_by_flag[1],
                     derived_by_flag[2], stream_);
    }
    const auto by_slot = [&](uint32_t flag) -> const float* {
      switch (flag) {
        case KVC_SIGNAL_ACC_ATTENTION: return dc_.acc;
        case KVC_SIGNAL_LAST_ATTENTION: return dc_.last;
        case KVC_SIGNAL_KEY_NORM: return dc_.norm;
        case KVC_SIGNAL_WINDOW_ATTENTION: return derived_by_flag[0];
        case KVC_SIGNAL_PIVOTAL_COUNT: return derived_by_flag[1];
        case KVC_SIGNAL_KEY_MEAN_COSINE: return derived_by_flag[2];
      }
      return nullptr;
    };
    const rule_math::Rule& rule = rule_dev_.rule;
    const int64_t G = n_heads_total_;
    const int64_t stride = scratch_stride(dc_.table_cap);
    const bool pool = rule.pooling != KVC_POOLING_NONE && rule.pool_kernel > 1;
    rule_score_.resize(G * stride * sizeof(double));
    if (pool) rule_raw_.resize(G * stride * sizeof(double));
    if (rule.has_tie) rule_tie_.resize(G * stride * sizeof(double));
    rule_keep_.resize(G * stride);
    rule_idx_.resize(G * stride * sizeof(int32_t));
    const int64_t pool_stride =
        rule_math::pow2_at_least(static_cast<int64_t>(cfg_.n_heads) * stride);
    if (rule.adaptive) rule_pool_.resize(cfg_.n_layers * pool_stride * sizeof(int32_t));
    rule_layouts_.resize(G * sizeof(rule_math::Layout));
    plan_ranks_.resize(G * stride * sizeof(int32_t));
    plan_counts_.resize(G * sizeof(int64_t));
    rule_flags_.resize(G * sizeof(int32_t));
    // One device area copied back at once: {kind, shared}, counts[G], packet[G][kPacketRanks].
    const size_t back_words = 2 + G + G * kPacketRanks;
    rule_back_.resize(back_words * sizeof(int32_t));
    rule_back_host_.resize(back_words * sizeof(int32_t));
    evict_all_.resize(G * stride * sizeof(int32_t));
    gather_scratch_.resize(3 * G * dc_.table_cap * sizeof(int32_t));

    DeviceRuleArgs a;
    a.rule = rule;
    a.c = dc_;
    a.tok_table = rule.n_separators > 0 ? dc_.tok_table : nullptr;
    a.heavy = by_slot(r.heavy_signal);
    a.tie = r.tie_signal ? by_slot(r.tie_signal) : nullptr;
    if (a.heavy == nullptr && (rule.heavy > 0 || rule.layer_heavy != nullptr))
      fail(KVC_ERR_INTERNAL, "the device rule needs a signal the session does not keep");
    if (a.heavy == nullptr) a.heavy = dc_.acc;  // never read: no heavy budget
    a.protect = dc_.protect;
    a.size_state = rule_size_state_.get<int64_t>();
    a.sc.raw = pool ? rule_raw_.get<double>() : nullptr;
    a.sc.score = rule_score_.get<double>();
    a.sc.tie = rule.has_tie ? rule_tie_.get<double>() : nullptr;
    a.sc.keep = rule_keep_.get<uint8_t>();
    a.sc.idx = rule_idx_.get<int32_t>();
    a.sc.pool = rule.adaptive ? rule_pool_.get<int32_t>() : nullptr;
    a.sc.layouts = rule_layouts_.get<rule_math::Layout>();
    a.sc.stride = stride;
    a.sc.idx_stride = stride;
    a.sc.pool_stride = pool_stride;
    a.out.ranks = plan_ranks_.get<int32_t>();
    a.out.counts = plan_counts_.get<int64_t>();
    a.out.stride = stride;
    a.evicted = rule_flags_.get<int32_t>();
    const int64_t step = engine.steps();
    ::kvc::cuda::decide_rule(a, step, n_new, stream_);
    const rule_math::Step s = rule_math::step_kind(rule, step, n_new);
    const bool shared = rule.scope == KVC_SCOPE_SHARED;
    const int n_flags = shared ? 1
                        : rule.scope == KVC_SCOPE_PER_LAYER || rule.adaptive ? cfg_.n_layers
                                                                             : n_heads_total_;
    int32_t* back = rule_back_.get<int32_t>();
    finish_decision(a.evicted, n_flags, s.kind, shared ? 1 : 0, back, stream_);
    apply_device_plan(dc_, dc_.tok_table, n_heads_total_, a.out, back,
                      gather_scratch_.get<int32_t>(), back + 2, back + 2 + G, kPacketRanks,
                      evict_all_.get<int32_t>(), stream_);
    KVC_CUDA(cudaGetLastError());
    KVC_CUDA(cudaMemcpyAsync(rule_back_host_.get(), back, back_words * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, stream_));
    // The host's metadata must follow before the next step appends: the one wait.
    KVC_CUDA(cudaStreamSynchronize(stream_));
    const int32_t* hb = rule_back_host_.get<int32_t>();
    if (hb[0] == KVC_PLAN_NOTHING) return false;
    const int32_t* counts = hb + 2;
    const int32_t* packet = hb + 2 + G;
    const int32_t* lists = packet;
    int64_t list_stride = kPacketRanks, evicted = 0, largest = 0;
    for (int64_t i = 0; i < G; ++i) {
      evicted += counts[i];
      largest = std::max<int64_t>(largest, counts[i]);
    }
    if (largest > kPacketRanks) {  // a prefill or a burst: the full lists
      evict_all_host_.resize(G * stride);
      KVC_CUDA(cudaMemcpyAsync(evict_all_host_.data(), evict_all_.get(),
                               G * stride * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
      KVC_CUDA(cudaStreamSynchronize(stream_));
      lists = evict_all_host_.data();
      list_stride = stride;
    }
    // The same plan on the host metadata, as EVICT lists (what left each head).
    plan_host_ranks_.resize(static_cast<size_t>(G) * std::max<int64_t>(largest, 1));
    plan_host_counts_.resize(static_cast<size_t>(G));
    const int64_t ps = std::max<int64_t>(largest, 1);
    for (int64_t i = 0; i < G; ++i) {
      std::copy(lists + i * list_stride, lists + i * list_stride + counts[i],
                plan_host_ranks_.begin() + i * ps);
      plan_host_counts_[static_cast<size_t>(i)] = counts[i];
    }
    kvc_plan plan{};
    plan.struct_size = sizeof plan;
    plan.kind = KVC_PLAN_EVICT;
    plan.shared = 0;
    plan.ranks = plan_host_ranks_.data();
    plan.stride = ps;
    plan.counts = plan_host_counts_.data();
    cache.apply(plan);
    mirror_.device_applied(cache);
    return evicted > 0;
  }

 private:
  // The rule's arrays on the device (once per engine) and its lazy state.
  void bind_rule(RuleEngine& engine) {
    if (bound_rule_ == &engine) return;
    rule_dev_ = make_rule_data(engine.rule(), engine.trigger_size(), cfg_.n_layers,
                               cfg_.n_heads);
    const auto to_device = [](DeviceBuffer& buf, const auto& v) {
      using T = typename std::decay_t<decltype(v)>::value_type;
      if (v.empty()) return static_cast<const T*>(nullptr);
      buf.resize(v.size() * sizeof(T));
      KVC_CUDA(cudaMemcpy(buf.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
      return static_cast<const T*>(buf.get<T>());
    };
    rule_dev_.rule.separators = to_device(rule_separators_, rule_dev_.separators);
    rule_dev_.rule.score_layers = to_device(rule_score_layers_, rule_dev_.score_layers);
    rule_dev_.rule.layer_heavy =
        rule_dev_.has_layer_heavy ? to_device(rule_layer_heavy_, rule_dev_.layer_heavy) : nullptr;
    bound_rule_ = &engine;
    // Lazy state: protection by slot (grown with the slots, cleared by append_kv for a new
    // slot) and each head's size after the last refresh (-1: none yet).
    rule_size_state_.resize(static_cast<size_t>(n_heads_total_) * sizeof(int64_t));
    reset_rule_state();
  }

  void reset_rule_state() {
    if (!opt_.device_rules) return;
    if (rule_size_state_.bytes() > 0)
      KVC_CUDA(cudaMemsetAsync(rule_size_state_.get(), 0xff, rule_size_state_.bytes(), stream_));
    if (dc_.protect) KVC_CUDA(cudaMemsetAsync(protect_.get(), 0, protect_.bytes(), stream_));
  }

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
    if (opt_.device_rules) {  // the device rule's protection by slot
      grow(protect_, s_old / sizeof(float), s_new / sizeof(float));
      dc_.protect = protect_.get<uint8_t>();
    }
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
    gather_scratch_.resize(3 * bytes);
    dc_.slot_table = slot_table_.get<int32_t>();
    dc_.pos_table = pos_table_.get<int32_t>();
    if (opt_.device_rules) {  // token ids by rank, for the device rule's separators
      tok_table_.release();
      tok_table_.resize(bytes);
      dc_.tok_table = tok_table_.get<int32_t>();
    }
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
    prepare_packet(cache, tokens, n);
    send_packet();
    KVC_CUDA(cudaEventRecord(packet_free_, stream_));
  }

  // Host half: the mirror's changes written into the pinned packet (after the previous packet
  // has left). Allocates, so it runs before any graph capture.
  void prepare_packet(const KvCache& cache, const int32_t* tokens, int64_t n) {
    mirror_.prepare(cache, upload_);
    const size_t L = static_cast<size_t>(n_heads_total_);
    const bool with_tokens = dc_.tok_table != nullptr;
    const size_t words = static_cast<size_t>(n) + 5 * L + 1 + upload_.gather_ranks.size() +
                         (with_tokens ? 3 : 2) * upload_.slots.size();
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
    if (with_tokens) put(upload_.tokens);
    put(upload_.gather_ranks);
    packet_words_ = words;
    packet_tokens_ = n;
  }

  // Device half: the copy and the table kernels (capturable: no allocation, no host wait).
  void send_packet() {
    const size_t L = static_cast<size_t>(n_heads_total_);
    const size_t words = packet_words_;
    const int64_t n = packet_tokens_;
    KVC_CUDA(cudaMemcpyAsync(packet_dev_.get(), packet_host_.get(), words * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
    const int32_t* d = packet_dev_.get<int32_t>();
    tokens_dev_ = d;
    const int32_t* sizes = d + n;
    const int32_t* first = sizes + L;
    const int32_t* entry_offset = first + L;
    const int32_t* gather_offset = entry_offset + L + 1;
    const int32_t* gather_count = gather_offset + L;
    const int32_t* slots = gather_count + L;
    const int32_t* positions = slots + upload_.slots.size();
    const int32_t* toks = dc_.tok_table ? positions + upload_.positions.size() : nullptr;
    const int32_t* gather_ranks =
        positions + upload_.positions.size() + (toks ? upload_.tokens.size() : 0);
    if (upload_.any_gather)
      gather_tables(dc_, n_heads_total_, gather_offset, gather_count, gather_ranks,
                    gather_scratch_.get<int32_t>(), stream_);
    write_tables(dc_, n_heads_total_, sizes, first, entry_offset, slots, positions, toks,
                 stream_);
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

    Block b;
    b.req = &req;
    b.off = off;
    b.n = n;
    b.first_position = first_position;
    b.max_size = max_size;
    b.is_last = off + n == req.n_tokens;
    // Split-K decode attention (KVC_CUDA_DECODE_ATTENTION=splitk): one query, long caches.
    if (opt_.split_k && n == 1 && cfg_.head_dim % 8 == 0 && cfg_.head_dim <= 256) {
      b.splits = rule_math::split_count(max_size, H, 2 * sm_count_, opt_.split_k_min_keys,
                                        kMaxSplits);
      if (b.splits > 1)
        partials_.resize(static_cast<size_t>(H) * kMaxSplits * (cfg_.head_dim + 2) *
                         sizeof(float));
    }
    const bool want_logits = req.which != KVC_LOGITS_NONE && req.logits != nullptr &&
                             !(req.which == KVC_LOGITS_LAST && !b.is_last);
    if (want_logits) {
      b.first_row = req.which == KVC_LOGITS_LAST ? n - 1 : 0;
      b.rows = static_cast<int>(n - b.first_row);
      logits_.resize(static_cast<size_t>(b.rows) * cfg_.vocab_size * sizeof(float));
    }
    prepare_packet(cache, req.tokens + off, n);

    // A decode step as a CUDA graph (KVC_CUDA_GRAPHS=1): captured, then the instantiated
    // graph is updated in place (same topology, new parameters) and launched.
    if (opt_.graphs && n == 1) {
      const size_t logit_bytes =
          want_logits ? static_cast<size_t>(b.rows) * cfg_.vocab_size * sizeof(float) : 0;
      if (want_logits) logits_host_.resize(logit_bytes);
      b.logits_to_pinned = want_logits;
      KVC_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      cudaGraph_t graph = nullptr;
      try {
        send_packet();
        enqueue_block(b);
      } catch (...) {
        cudaStreamEndCapture(stream_, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      KVC_CUDA(cudaStreamEndCapture(stream_, &graph));
      launch_graph(graph);
      if (want_logits) {
        float* out = req.which == KVC_LOGITS_LAST
                         ? req.logits
                         : req.logits + static_cast<size_t>(off) * cfg_.vocab_size;
        staged_logits_dst_ = out;
        staged_logits_bytes_ = logit_bytes;
      }
    } else {
      send_packet();
      enqueue_block(b);
    }
    KVC_CUDA(cudaEventRecord(packet_free_, stream_));
    KVC_CUDA(cudaGetLastError());
    queries_ += n;  // ring rows only need consecutive numbers, so this never resets
  }

  struct Block {
    const ForwardRequest* req = nullptr;
    int64_t off = 0, n = 0, first_position = 0, max_size = 0, first_row = 0;
    int rows = 0;
    int splits = 1;
    bool is_last = true;
    bool logits_to_pinned = false;
  };

  void launch_graph(cudaGraph_t graph) {
    if (graph_exec_ != nullptr) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(graph_exec_, graph, &info) != cudaSuccess) {
        (void)cudaGetLastError();  // not sticky: a different topology, instantiate anew
        cudaGraphExecDestroy(graph_exec_);
        graph_exec_ = nullptr;
      }
    }
    if (graph_exec_ == nullptr) {
      const cudaError_t e = cudaGraphInstantiate(&graph_exec_, graph, 0);
      if (e != cudaSuccess) {
        cudaGraphDestroy(graph);
        cuda_fail(e, "cudaGraphInstantiate(decode step)");
      }
    }
    cudaGraphDestroy(graph);
    KVC_CUDA(cudaGraphLaunch(graph_exec_, stream_));
  }

  // Every launch of one block of tokens, in stream order: no allocation, no host wait.
  void enqueue_block(const Block& b) {
    const ForwardRequest& req = *b.req;
    const int hidden = cfg_.hidden_size, inter = cfg_.intermediate_size;
    const bool bf16 = m_.bf16();
    const bool shift = req.positions == KVC_POSITIONS_SHIFT;
    const bool want_acc = (req.signals & KVC_SIGNAL_ACC_ATTENTION) != 0;
    const bool want_last = (req.signals & KVC_SIGNAL_LAST_ATTENTION) != 0 && b.is_last;
    const float scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
    const int N = static_cast<int>(b.n);
    float* x = x_.get<float>();
    embed(m_.embed_in, bf16, tokens_dev_, N, hidden, x, stream_);
    for (int l = 0; l < cfg_.n_layers; ++l) {
      const DeviceLayer& w = m_.layers[static_cast<size_t>(l)];
      layer_norm(x, w.ln1_w, w.ln1_b, cfg_.layer_norm_eps, N, hidden, h_.get(), bf16, stream_);
      gemm(w.qkv, 3 * hidden, hidden, h_.get(), N, qkv_.get<float>());
      append_kv(dc_, l, qkv_.get<float>(), w.qkv_b, N, b.first_position, shift,
                cos_.get<float>(), sin_.get<float>(), cfg_.rotary_ndims, bf16, q_.get<float>(),
                stream_);
      if (b.splits > 1)
        attention_split_k(dc_, l, q_.get<float>(), b.max_size, shift, cos_.get<float>(),
                          sin_.get<float>(), cfg_.rotary_ndims, scale, want_acc, want_last,
                          queries_, bf16, b.splits, scores_.get<float>(),
                          partials_.get<float>(), ctx_.get(), stream_);
      else
        attention(dc_, l, q_.get<float>(), N, b.max_size, shift, cos_.get<float>(),
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
    if (b.rows == 0) return;
    const int64_t vocab = cfg_.vocab_size;
    layer_norm(x + b.first_row * hidden, m_.final_ln_w, m_.final_ln_b, cfg_.layer_norm_eps,
               b.rows, hidden, h_.get(), bf16, stream_);
    gemm(m_.embed_out, static_cast<int>(vocab), hidden, h_.get(), b.rows, logits_.get<float>());
    void* out = b.logits_to_pinned
                    ? logits_host_.get()
                    : static_cast<void*>(req.which == KVC_LOGITS_LAST
                                             ? req.logits
                                             : req.logits + static_cast<size_t>(b.off) * vocab);
    KVC_CUDA(cudaMemcpyAsync(out, logits_.get(), static_cast<size_t>(b.rows) * vocab * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  }

  const CudaModel& m_;
  const ModelConfig& cfg_;
  const CudaOptions opt_;  // switches (cuda_options.h), read when the session starts
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
  size_t packet_words_ = 0;
  int64_t packet_tokens_ = 0;
  const int32_t* tokens_dev_ = nullptr;
  std::vector<float> signal_host_;
  int sm_count_ = 1;  // the device's multiprocessors
  // Live-entry signal fetch.
  PinnedBuffer live_offsets_host_, live_host_;
  DeviceBuffer live_offsets_dev_, live_dev_;
  // Split-K decode attention.
  DeviceBuffer partials_;
  // CUDA graph of the decode step; logits staged in pinned memory.
  DeviceBuffer blas_workspace_;
  cudaGraphExec_t graph_exec_ = nullptr;
  PinnedBuffer logits_host_;
  float* staged_logits_dst_ = nullptr;
  size_t staged_logits_bytes_ = 0;
  // The device rule.
  const RuleEngine* bound_rule_ = nullptr;
  RuleData rule_dev_;
  DeviceBuffer rule_separators_, rule_score_layers_, rule_layer_heavy_;
  DeviceBuffer tok_table_, protect_, rule_size_state_;
  DeviceBuffer rule_raw_, rule_score_, rule_tie_, rule_keep_, rule_idx_, rule_pool_,
      rule_layouts_, plan_ranks_, plan_counts_, rule_flags_, rule_back_, evict_all_;
  PinnedBuffer rule_back_host_;
  std::vector<int32_t> evict_all_host_, plan_host_ranks_;
  std::vector<int64_t> plan_host_counts_;
};

}  // namespace

std::unique_ptr<ComputeBackend> CudaModel::create_session() {
  return std::make_unique<CudaSession>(*this);
}

}  // namespace kvc::cuda
