#include "cuda_options.h"

#include <cstdlib>

#include "common/error.h"

namespace kvc::cuda {

namespace {

// The index of `value` in `choices` (the first is the default, also for an empty value).
int choose(const char* name, const char* value, std::initializer_list<const char*> choices) {
  if (value == nullptr || *value == '\0') return 0;
  int i = 0;
  std::string list;
  for (const char* c : choices) {
    if (std::string(value) == c) return i;
    if (i > 0) list += '|';
    list += c;
    ++i;
  }
  fail(KVC_ERR_INVALID_ARGUMENT,
       std::string(name) + "='" + value + "' is not one of " + list);
}

}  // namespace

CudaOptions CudaOptions::parse(const std::function<const char*(const char*)>& get) {
  CudaOptions o;
  o.device_rules = choose("KVC_CUDA_RULES", get("KVC_CUDA_RULES"), {"host", "device"}) == 1;
  o.live_signals =
      choose("KVC_CUDA_SIGNAL_FETCH", get("KVC_CUDA_SIGNAL_FETCH"), {"all", "live"}) == 1;
  o.graphs = choose("KVC_CUDA_GRAPHS", get("KVC_CUDA_GRAPHS"), {"0", "1"}) == 1;
  o.split_k = choose("KVC_CUDA_DECODE_ATTENTION", get("KVC_CUDA_DECODE_ATTENTION"),
                     {"block", "splitk"}) == 1;
  if (const char* v = get("KVC_CUDA_SPLITK_MIN_KEYS"); v != nullptr && *v != '\0') {
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    if (end == v || *end != '\0' || n < 16 || n > (1 << 20))
      fail(KVC_ERR_INVALID_ARGUMENT, std::string("KVC_CUDA_SPLITK_MIN_KEYS='") + v +
                                         "' is not an integer in [16, 1048576]");
    o.split_k_min_keys = n;
  }
  return o;
}

CudaOptions CudaOptions::from_environment() {
  return parse([](const char* name) { return std::getenv(name); });
}

std::string CudaOptions::describe() const {
  return std::string("rules=") + (device_rules ? "device" : "host") +
         " signal_fetch=" + (live_signals ? "live" : "all") + " graphs=" + (graphs ? "1" : "0") +
         " decode_attention=" + (split_k ? "splitk" : "block");
}

}  // namespace kvc::cuda
