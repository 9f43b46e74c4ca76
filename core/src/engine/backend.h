// Compute backends: the interface between a session and the code that runs the model.
//
// The CPU backend (CpuForward) is compiled into libkvc. The CUDA backend lives in its own
// library, libkvc_cuda.so, which libkvc opens at run time (dlopen) so that libkvc itself never
// links CUDA and works on machines without it. Both sides are built from this tree by the same
// compiler; the interface is internal C++ and versioned by kCudaInterfaceVersion.
//
// Division of work with a device backend: the host KvCache keeps the per-entry metadata (slot,
// position, token id, rank order) and executes eviction plans on it; the device keeps the keys,
// values and signals in the same slot numbers, and mirrors the rank -> slot tables. The session
// tells the backend when the host order changed so that only the changed tables are sent.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvc/kvc.h"
#include "kvc/policy.h"
#include "model/tensor.h"

namespace kvc {

class KvCache;
class RuleEngine;
struct ModelWeights;

// Exact block scoring (docs/block-scoring.md): a request whose queries attend one at a time in
// each layer, with the chance to evict between them. `after_query` runs after query t of the
// request has attended in `layer` (its key and value appended, its signals added) and may
// change that layer's cache; the next query of that layer then sees the change, exactly as a
// token-by-token run would.
class QueryHook {
 public:
  virtual ~QueryHook() = default;
  virtual void after_query(int layer, int64_t t, KvCache& cache) = 0;
};

struct ForwardRequest {
  const int32_t* tokens = nullptr;
  int64_t n_tokens = 0;
  int64_t first_position = 0;  // original position of tokens[0] (tokens seen before)
  kvc_position_mode positions = KVC_POSITIONS_SHIFT;
  uint32_t signals = 0;        // KVC_SIGNAL_* to maintain in the cache
  kvc_logits which = KVC_LOGITS_LAST;
  float* logits = nullptr;     // [n_tokens or 1][vocab] as `which` asks
  QueryHook* per_query = nullptr;  // set: queries attend one at a time (supports_per_query)
};

// Per-session compute state. Every method may throw kvc::Error.
class ComputeBackend {
 public:
  virtual ~ComputeBackend() = default;

  // Appends the request's tokens to `cache` (metadata always; keys and values where this
  // backend keeps them on the host) and computes what the request asks for.
  virtual void run(const ForwardRequest& request, KvCache& cache) = 0;
  // Whether run() honours ForwardRequest::per_query.
  virtual bool supports_per_query() const { return false; }
  // Bytes of one stored key or value element (the cache's storage type).
  virtual size_t kv_value_bytes() const { return sizeof(float); }

  // The policy is about to read `signals` (KVC_SIGNAL_* bits) through the host cache: bring
  // them up to date there. A no-op for backends that maintain them on the host.
  virtual void fetch_signals(KvCache& cache, uint32_t signals) {
    (void)cache;
    (void)signals;
  }
  // `plan` (validated, kind KEEP or EVICT) has just been applied to the host cache.
  virtual void on_plan_applied(const kvc_plan& plan, const KvCache& cache) {
    (void)plan;
    (void)cache;
  }
  // The host order of (layer, head) changed some other way (manual keep, reset); -1 = all.
  virtual void on_heads_changed(int layer, int head) {
    (void)layer;
    (void)head;
  }

  // Whether this backend decides rule policies itself, where the signals live (decide_rule),
  // instead of the engine deciding on the host over fetched signals.
  virtual bool runs_rules() const { return false; }
  // The decision of `rule` for the step the engine has just counted (rule.steps(); the step
  // appended `n_new` entries), applied to the backend's state and to `cache`: the same result
  // as fetch_signals, rule.decide() and cache.apply(). Returns whether anything left. Called
  // only when runs_rules(); the backend keeps the rule's lazy state itself.
  virtual bool decide_rule(RuleEngine& rule, int64_t n_new, KvCache& cache) {
    (void)rule;
    (void)n_new;
    (void)cache;
    return false;
  }
};

// Per-model device state (weights on the device), shared by the model's sessions.
class DeviceModel {
 public:
  virtual ~DeviceModel() = default;
  virtual std::unique_ptr<ComputeBackend> create_session() = 0;
  virtual DType dtype() const = 0;
  virtual size_t weight_bytes() const = 0;  // bytes of weights on the device
  virtual std::string device_name() const = 0;
};

// What libkvc_cuda.so's entry returns: a process-wide object, never freed.
class DeviceProvider {
 public:
  virtual ~DeviceProvider() = default;
  // Throws KVC_ERR_BACKEND ("no CUDA device: ...") unless `device` can be used.
  virtual void probe(int device) = 0;
  // Uploads `weights` to `device`, converting matrices to `dtype` (F16 or BF16).
  virtual std::unique_ptr<DeviceModel> load(const ModelWeights& weights, int device,
                                            DType dtype) = 0;
};

// Bumped whenever anything in this header (or a struct it names) changes layout.
// 2: KvCache's per-head caches carry the windowed and derived signals.
// 3: ComputeBackend::runs_rules / decide_rule (the rule decided on the device).
constexpr uint32_t kCudaInterfaceVersion = 3;

// Exported (extern "C") by libkvc_cuda.so:
//   uint32_t kvc_cuda_backend_interface_version(void);
//   kvc::DeviceProvider* kvc_cuda_backend_create(uint32_t interface_version);  // NULL: mismatch
constexpr const char* kCudaVersionSymbol = "kvc_cuda_backend_interface_version";
constexpr const char* kCudaCreateSymbol = "kvc_cuda_backend_create";
constexpr const char* kCudaLibraryName = "libkvc_cuda.so";

// Opens the CUDA backend library once per process and returns its provider; throws
// KVC_ERR_BACKEND with the reason (library not found next to libkvc, dlopen error, interface
// version mismatch). The library is looked up in $KVC_CUDA_LIBRARY if set (a file path), else
// next to the binary that holds libkvc's code.
DeviceProvider& cuda_provider();
// Same, from an explicit path, without caching (for tests).
DeviceProvider& open_cuda_provider(const std::string& library_path);
// Where cuda_provider() looks.
std::string cuda_library_path();

}  // namespace kvc
