// Small pieces every file of the CUDA backend uses: error checks that turn a CUDA or cuBLAS
// failure into a kvc::Error naming the call, and owning device / pinned host buffers.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "common/error.h"
#include "rule_math.h"

namespace kvc::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what) {
  fail(e == cudaErrorMemoryAllocation ? KVC_ERR_OUT_OF_MEMORY : KVC_ERR_BACKEND,
       std::string("CUDA: ") + what + " failed: " + cudaGetErrorName(e) + " (" +
           cudaGetErrorString(e) + ")");
}
#define KVC_CUDA(call)                                  \
  do {                                                  \
    const cudaError_t kvc_e_ = (call);                  \
    if (kvc_e_ != cudaSuccess) cuda_fail(kvc_e_, #call); \
  } while (0)
#define KVC_CUBLAS(call)                                                               \
  do {                                                                                 \
    const cublasStatus_t kvc_s_ = (call);                                              \
    if (kvc_s_ != CUBLAS_STATUS_SUCCESS)                                               \
      fail(kvc_s_ == CUBLAS_STATUS_ALLOC_FAILED ? KVC_ERR_OUT_OF_MEMORY : KVC_ERR_BACKEND, \
           std::string("cuBLAS: ") + #call + " failed: " + cublasGetStatusString(kvc_s_)); \
  } while (0)

// Capacity in bytes for a buffer asked to hold `bytes` that holds `current`: geometric
// (rule_math::grown_capacity, host-tested), so a size growing by one token per step
// reallocates O(log n) times, not at every step.
inline size_t grown_bytes(size_t bytes, size_t current) {
  return static_cast<size_t>(rule_math::grown_capacity(static_cast<int64_t>(bytes),
                                                       static_cast<int64_t>(current), 4096,
                                                       256));
}

// Owning device allocation; resize discards the contents when it grows (geometrically).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }
  void resize(size_t bytes) {
    if (bytes <= bytes_) return;
    const size_t cap = grown_bytes(bytes, bytes_);
    release();
    KVC_CUDA(cudaMalloc(&ptr_, cap));
    bytes_ = cap;
  }
  void swap(DeviceBuffer& o) {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
  }
  void release() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  template <typename T = void> T* get() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  void resize(size_t bytes) {
    if (bytes <= bytes_) return;
    const size_t cap = grown_bytes(bytes, bytes_);
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    KVC_CUDA(cudaMallocHost(&ptr_, cap));
    bytes_ = cap;
  }
  template <typename T = void> T* get() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace kvc::cuda
