// Backend selection through the public C ABI (libkvc.so opens libkvc_cuda.so beside it).
// Runs on every machine: without a GPU the no-device paths are checked, with one the CUDA
// model must load and report itself (a failure there is a failure, never a skip).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "cuda_test_util.h"

namespace kvc::cudatest {
namespace {

// Records whether a CUDA device is present (gpu_presence.h) as properties of the test's
// result: tests/cuda/gpu_test_count.py reads them from the gtest JSON to decide whether zero
// GPU tests run is a failure. Never skips.
TEST(CudaDevice, PresenceIsDetected) {
  const CudaDevicePresence& gpu = cuda_device_presence();
  RecordProperty("cuda_device_present", gpu.present ? "1" : "0");
  RecordProperty("cuda_device_detail", gpu.detail);
  std::printf("CUDA device: %s (%s)\n", gpu.present ? "present" : "absent", gpu.detail.c_str());
  EXPECT_FALSE(gpu.detail.empty());
}

// The first GPU test: where a device is present, the CUDA backend must load.
TEST(GpuBackend, LoadsWhereADeviceIsPresent) {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string error = cuda_load_error();
  EXPECT_TRUE(error.empty()) << "a CUDA device is present (" << cuda_device_presence().detail
                             << ") but the CUDA backend does not load: " << error;
}

TEST(BackendSelection, AutoFallsBackToTheCpuSilentlyOrUsesTheGpu) {
  const std::string why = cuda_unavailable_reason();
  ModelPtr m;
  ASSERT_EQ(load(fixture_model("neox-par-r25"), KVC_BACKEND_AUTO, KVC_DTYPE_AUTO, &m), KVC_OK)
      << kvc_last_error();
  // With a device present AUTO must choose it: a silent fall-back there hides a broken backend.
  EXPECT_EQ(backend_of(m.get()), why.empty() ? KVC_BACKEND_CUDA : KVC_BACKEND_CPU)
      << (why.empty() ? "a CUDA device is present; the CUDA backend: " + cuda_load_error() : why);
}

TEST(BackendSelection, AutoWithFloat32StaysOnTheCpu) {
  ModelPtr m;
  ASSERT_EQ(load(fixture_model("neox-par-r25"), KVC_BACKEND_AUTO, KVC_DTYPE_F32, &m), KVC_OK)
      << kvc_last_error();
  EXPECT_EQ(backend_of(m.get()), KVC_BACKEND_CPU);
}

TEST(BackendSelection, CudaWithFloat32IsUnsupported) {
  ModelPtr m;
  EXPECT_EQ(load(fixture_model("neox-par-r25"), KVC_BACKEND_CUDA, KVC_DTYPE_F32, &m),
            KVC_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(kvc_last_error()).find("float16 or bfloat16"), std::string::npos)
      << kvc_last_error();
}

TEST(BackendSelection, CudaWithoutADeviceSaysSo) {
  const std::string why = cuda_unavailable_reason();
  if (why.empty()) GTEST_SKIP() << "a CUDA device is present: " << cuda_device_presence().detail;
  ModelPtr m;
  EXPECT_EQ(load(fixture_model("neox-par-r25"), KVC_BACKEND_CUDA, KVC_DTYPE_F16, &m),
            KVC_ERR_BACKEND);
  const std::string msg = kvc_last_error();
  EXPECT_TRUE(msg.find("no CUDA device") != std::string::npos ||
              msg.find("libcublas") != std::string::npos)
      << msg;
}

TEST(BackendSelection, CudaWithoutTheLibrarySaysWhereItLooked) {
  const char* before = std::getenv("KVC_CUDA_LIBRARY");
  const std::string saved = before ? before : "";
  ::setenv("KVC_CUDA_LIBRARY", "/nonexistent/libkvc_cuda.so", 1);
  ModelPtr m;
  const kvc_status st =
      load(fixture_model("neox-par-r25"), KVC_BACKEND_CUDA, KVC_DTYPE_F16, &m);
  const std::string msg = kvc_last_error();
  ModelPtr a;
  const kvc_status st_auto =
      load(fixture_model("neox-par-r25"), KVC_BACKEND_AUTO, KVC_DTYPE_AUTO, &a);
  if (before)
    ::setenv("KVC_CUDA_LIBRARY", saved.c_str(), 1);
  else
    ::unsetenv("KVC_CUDA_LIBRARY");
  EXPECT_EQ(st, KVC_ERR_BACKEND);
  EXPECT_NE(msg.find("libkvc_cuda.so not found"), std::string::npos) << msg;
  ASSERT_EQ(st_auto, KVC_OK);
  EXPECT_EQ(backend_of(a.get()), KVC_BACKEND_CPU);
}

}  // namespace
}  // namespace kvc::cudatest
