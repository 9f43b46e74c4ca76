// Helpers shared by the engine tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kvc/kvc.h"

namespace kvc::testing {

inline std::string source_dir() { return KVC_SOURCE_DIR; }
inline std::string fixture_model(const std::string& name) {
  return source_dir() + "/tests/fixtures/models/" + name;
}

struct ModelDeleter {
  void operator()(kvc_model* m) const { kvc_model_free(m); }
};
struct SessionDeleter {
  void operator()(kvc_session* s) const { kvc_session_free(s); }
};
using ModelPtr = std::unique_ptr<kvc_model, ModelDeleter>;
using SessionPtr = std::unique_ptr<kvc_session, SessionDeleter>;

inline ModelPtr load(const std::string& path, kvc_dtype dtype = KVC_DTYPE_F32, int threads = 2) {
  kvc_model_options o;
  kvc_model_options_init(&o);
  o.backend = KVC_BACKEND_CPU;
  o.weight_dtype = dtype;
  o.n_threads = threads;
  kvc_model* m = nullptr;
  const kvc_status st = kvc_model_load(path.c_str(), &o, &m);
  EXPECT_EQ(st, KVC_OK) << kvc_last_error();
  return ModelPtr(m);
}

inline SessionPtr session(kvc_model* model, kvc_position_mode positions = KVC_POSITIONS_SHIFT,
                          const char* policy = nullptr) {
  kvc_session_options o;
  kvc_session_options_init(&o);
  o.positions = positions;
  o.policy = policy;
  kvc_session* s = nullptr;
  const kvc_status st = kvc_session_create(model, &o, &s);
  EXPECT_EQ(st, KVC_OK) << kvc_last_error();
  return SessionPtr(s);
}

inline std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  f.seekg(0, std::ios::end);
  const auto bytes = static_cast<size_t>(f.tellg());
  f.seekg(0);
  std::vector<float> v(bytes / sizeof(float));
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(bytes));
  return v;
}

inline int32_t vocab_of(kvc_model* m) {
  kvc_model_info info;
  kvc_model_info_init(&info);
  EXPECT_EQ(kvc_model_get_info(m, &info), KVC_OK);
  return info.vocab_size;
}

}  // namespace kvc::testing
