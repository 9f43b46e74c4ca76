// Run-time switches of the CUDA backend, read from the environment when a session starts.
// Every path that has not yet run on a GPU is off by default (docs/cuda.md, "Switches").
//
//   KVC_CUDA_RULES=host|device          where a rule policy's decision runs (default host)
//   KVC_CUDA_SIGNAL_FETCH=all|live      what fetch_signals copies: every slot (default) or
//                                       the live entries only, gathered on the device
//   KVC_CUDA_GRAPHS=0|1                 decode steps replayed as a CUDA graph (default 0)
//   KVC_CUDA_DECODE_ATTENTION=block|splitk   decode attention kernel (default block)
//   KVC_CUDA_SPLITK_MIN_KEYS=N          keys per split at least (default 256)
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace kvc::cuda {

struct CudaOptions {
  bool device_rules = false;
  bool live_signals = false;
  bool graphs = false;
  bool split_k = false;
  int64_t split_k_min_keys = 256;

  // Throws KVC_ERR_INVALID_ARGUMENT naming the variable and the values it takes.
  static CudaOptions parse(const std::function<const char*(const char*)>& get);
  static CudaOptions from_environment();
  // "rules=host signal_fetch=all graphs=0 decode_attention=block"
  std::string describe() const;
};

}  // namespace kvc::cuda
