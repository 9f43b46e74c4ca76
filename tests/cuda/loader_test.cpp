// The run-time loader of libkvc_cuda.so: a missing or foreign library gives a clear
// KVC_ERR_BACKEND, and the real one loads; without a device its probe reports why no device can
// be used (which also checks that kvc::Error thrown inside libkvc_cuda.so is caught in the
// core), with one (gpu_presence.h) the probe must succeed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>

#include "common/error.h"
#include "engine/backend.h"
#include "gpu_presence.h"

namespace kvc {
namespace {

std::string message_of(const std::function<void()>& f, kvc_status* status = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (status) *status = e.status();
    return e.what();
  }
  return "";
}

// The library built with these tests, or $KVC_CUDA_LIBRARY (a copied build, tools/gpu_check.sh).
std::string library_under_test() {
  const char* env = std::getenv("KVC_CUDA_LIBRARY");
  return env && *env ? env : KVC_CUDA_LIBRARY_PATH;
}

// libkvc.so (a shared library that is not a backend), or $KVC_TEST_LIBKVC for a copied build.
std::string libkvc_under_test() {
  const char* env = std::getenv("KVC_TEST_LIBKVC");
  return env && *env ? env : KVC_LIBKVC_PATH;
}

TEST(CudaLoader, MissingLibraryNamesThePath) {
  kvc_status st = KVC_OK;
  const std::string msg =
      message_of([] { open_cuda_provider("/nonexistent/dir/libkvc_cuda.so"); }, &st);
  EXPECT_EQ(st, KVC_ERR_BACKEND);
  EXPECT_NE(msg.find("libkvc_cuda.so not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/nonexistent/dir/libkvc_cuda.so"), std::string::npos) << msg;
}

TEST(CudaLoader, ForeignLibraryIsRejected) {
  kvc_status st = KVC_OK;
  const std::string msg = message_of([] { open_cuda_provider(libkvc_under_test()); }, &st);
  EXPECT_EQ(st, KVC_ERR_BACKEND);
  EXPECT_NE(msg.find("is not a CUDA backend: it does not export the symbol"), std::string::npos) << msg;
}

TEST(CudaLoader, EnvironmentOverridesTheLibraryPath) {
  const char* before = std::getenv("KVC_CUDA_LIBRARY");
  const std::string saved = before ? before : "";
  ::setenv("KVC_CUDA_LIBRARY", "/elsewhere/libkvc_cuda.so", 1);
  EXPECT_EQ(cuda_library_path(), "/elsewhere/libkvc_cuda.so");
  ::unsetenv("KVC_CUDA_LIBRARY");
  EXPECT_NE(cuda_library_path().find("libkvc_cuda.so"), std::string::npos);
  if (before) ::setenv("KVC_CUDA_LIBRARY", saved.c_str(), 1);
}

TEST(CudaLoader, RealLibraryLoadsAndProbesTheDevice) {
  const cudatest::CudaDevicePresence& gpu = cudatest::cuda_device_presence();
  DeviceProvider* provider = nullptr;
  const std::string load_error =
      message_of([&] { provider = &open_cuda_provider(library_under_test()); });
  // Without a device, a missing cuBLAS/cudart is an incomplete install, not a backend defect.
  if (!gpu.present && provider == nullptr && load_error.find("libcublas") != std::string::npos)
    GTEST_SKIP() << gpu.detail << ", and the CUDA runtime libraries are not installed: "
                 << load_error;
  ASSERT_NE(provider, nullptr) << load_error << " ("
                               << (gpu.present ? "a CUDA device is present: " : "")
                               << gpu.detail << ")";
  kvc_status st = KVC_OK;
  const std::string msg = message_of([&] { provider->probe(0); }, &st);
  if (gpu.present) {
    EXPECT_TRUE(msg.empty()) << "a CUDA device is present (" << gpu.detail
                             << ") but the backend's probe fails: " << msg;
    return;
  }
  EXPECT_EQ(st, KVC_ERR_BACKEND);
  EXPECT_NE(msg.find("no CUDA device"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kvc
