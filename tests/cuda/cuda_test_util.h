// Helpers of the CUDA API tests (public C ABI only).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gpu_presence.h"
#include "kvc/kvc.h"

namespace kvc::cudatest {

struct ModelDeleter {
  void operator()(kvc_model* m) const { kvc_model_free(m); }
};
struct SessionDeleter {
  void operator()(kvc_session* s) const { kvc_session_free(s); }
};
using ModelPtr = std::unique_ptr<kvc_model, ModelDeleter>;
using SessionPtr = std::unique_ptr<kvc_session, SessionDeleter>;

// KVC_TEST_SOURCE_DIR / KVC_TEST_POLICY_DIR override the build-time paths, so that a copied
// build (tools/gpu_bundle.sh) runs from another checkout.
inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}
inline std::string fixture_model(const std::string& name) {
  return env_or("KVC_TEST_SOURCE_DIR", KVC_SOURCE_DIR) + "/tests/fixtures/models/" + name;
}
inline std::string policy_dir() { return env_or("KVC_TEST_POLICY_DIR", KVC_BUILD_POLICY_DIR); }

inline kvc_status load(const std::string& path, kvc_backend backend, kvc_dtype dtype,
                       ModelPtr* out) {
  kvc_model_options o;
  kvc_model_options_init(&o);
  o.backend = backend;
  o.weight_dtype = dtype;
  o.n_threads = 2;
  kvc_model* m = nullptr;
  const kvc_status st = kvc_model_load(path.c_str(), &o, &m);
  out->reset(m);
  return st;
}

inline kvc_backend backend_of(const kvc_model* m) {
  kvc_model_info info;
  kvc_model_info_init(&info);
  EXPECT_EQ(kvc_model_get_info(m, &info), KVC_OK);
  return info.backend;
}

// Empty when a CUDA device is present (gpu_presence.h: found through the driver, not through
// the backend under test): the GPU tests then run, and any failure to load or run the CUDA
// backend fails them. Otherwise why they skip: "no CUDA driver: ..." or "no CUDA device: ...".
inline std::string cuda_unavailable_reason() {
  const CudaDevicePresence& gpu = cuda_device_presence();
  return gpu.present ? "" : gpu.detail;
}

// Why a CUDA model does not load (empty when it does).
inline std::string cuda_load_error() {
  ModelPtr m;
  const kvc_status st = load(fixture_model("neox-par-r25"), KVC_BACKEND_CUDA, KVC_DTYPE_F16, &m);
  if (st == KVC_OK) return "";
  return std::string(kvc_status_name(st)) + ": " + kvc_last_error();
}

// Token ids drawn uniformly from [0, vocab) with a fixed seed.
inline std::vector<int32_t> random_tokens(int vocab, size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = d(rng);
  return t;
}

// A session of `m` with the bundled policies; a failure to create it fails the test, with
// `context` in the message.
inline SessionPtr open_session(kvc_model* m, kvc_position_mode mode, const char* policy,
                               const std::vector<kvc_param>& params,
                               const std::string& context = "") {
  kvc_session_options o;
  kvc_session_options_init(&o);
  o.positions = mode;
  o.policy = policy;
  o.params = params.empty() ? nullptr : params.data();
  o.n_params = params.size();
  static const std::string dir = policy_dir();
  o.policy_path = dir.c_str();
  kvc_session* s = nullptr;
  EXPECT_EQ(kvc_session_create(m, &o, &s), KVC_OK)
      << context << (context.empty() ? "" : ": ") << kvc_last_error();
  return SessionPtr(s);
}

// Separators for sepllm and unified: token ids (the fixture models have no tokenizer).
constexpr const char* kSeparators = "1,2,3,4,5,6,7,8";

struct PolicyCase {
  const char* label;
  const char* policy;
  std::vector<kvc_param> params;
  bool scored;
};

// Every evicting rule family, with sizes small enough that the fixture models evict from the
// first tokens: per head, shared and adaptive allocation; lazy refresh; accumulated,
// last, windowed attention (pooled), key norms, key cosines, pivotal counts; separators.
inline std::vector<PolicyCase> evicting_policy_cases() {
  return {
      {"streaming", "streaming", {{"start_size", "2"}, {"recent_size", "10"}}, false},
      {"h2o_per_head", "h2o", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}},
       true},
      {"h2o_shared", "h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}, {"scope", "shared"}},
       true},
      {"h2o_adaptive", "h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"},
        {"allocation", "adaptive"}},
       true},
      {"lazy_h2o", "lazy_h2o",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"},
        {"update_interval", "3"}},
       true},
      {"sepllm", "sepllm",
       {{"start_size", "2"}, {"separator_size", "4"}, {"local_size", "8"},
        {"cache_size", "20"}, {"separators", kSeparators}},
       false},
      {"unified", "unified",
       {{"start_size", "2"}, {"separator_size", "4"}, {"heavy_size", "4"}, {"local_size", "8"},
        {"separators", kSeparators}},
       true},
      {"tova", "tova", {{"budget", "12"}, {"start_size", "2"}}, true},
      {"snapkv", "snapkv",
       {{"window", "4"}, {"kernel_size", "3"}, {"start_size", "2"}, {"heavy_size", "4"}},
       true},
      {"pyramidkv_adaptive", "pyramidkv",
       {{"window", "4"}, {"start_size", "2"}, {"heavy_size", "4"}, {"beta", "2"},
        {"allocation", "adaptive"}},
       true},
      {"knorm", "knorm", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}}, true},
      {"keydiff", "keydiff", {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}},
       true},
      {"scissorhands", "scissorhands",
       {{"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "4"}, {"history", "5"}},
       true},
  };
}

// "neox-par-r25", F16 -> "par_r25_f16" (test names allow only [A-Za-z0-9_]).
inline std::string param_name(const char* model, kvc_dtype dtype) {
  std::string s = std::string(model).substr(5);
  std::replace(s.begin(), s.end(), '-', '_');
  return s + (dtype == KVC_DTYPE_BF16 ? "_bf16" : "_f16");
}

}  // namespace kvc::cudatest
