// The decision between running and skipping the GPU tests (gpu_presence.h), on probe results
// as the CUDA driver would give them: skip only without a driver or without a device, and say
// which; anything else where a device exists makes the GPU tests run (and fail if broken).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "gpu_presence.h"

namespace kvc::cudatest {
namespace {

DriverProbe driver(int init_result, int count = 0) {
  DriverProbe p;
  p.opened = true;
  p.symbols = true;
  p.init_result = init_result;
  p.count = count;
  p.driver_version = 13000;
  return p;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

TEST(CudaDevicePresence, NoDriverLibrarySkipsSayingNoDriver) {
  DriverProbe p;
  p.open_error = "libcuda.so.1: cannot open shared object file";
  const auto r = classify_presence(p);
  EXPECT_FALSE(r.present);
  EXPECT_TRUE(starts_with(r.detail, "no CUDA driver: libcuda.so.1 cannot be opened")) << r.detail;
  EXPECT_NE(r.detail.find("cannot open shared object file"), std::string::npos) << r.detail;
}

TEST(CudaDevicePresence, StubDriverSkipsSayingNoDriver) {
  const auto r = classify_presence(driver(kCudaErrorStubLibrary));
  EXPECT_FALSE(r.present);
  EXPECT_TRUE(starts_with(r.detail, "no CUDA driver:")) << r.detail;
}

TEST(CudaDevicePresence, DriverWithoutDeviceSkipsSayingNoDevice) {
  auto p = driver(kCudaErrorNoDevice);
  EXPECT_FALSE(classify_presence(p).present);
  EXPECT_TRUE(starts_with(classify_presence(p).detail, "no CUDA device:"));
  p.device_node = "/dev/nvidia0";  // hidden by CUDA_VISIBLE_DEVICES: the driver's word wins
  p.visible_set = true;
  const auto r = classify_presence(p);
  EXPECT_FALSE(r.present);
  EXPECT_NE(r.detail.find("CUDA_VISIBLE_DEVICES=''"), std::string::npos) << r.detail;
  const auto zero = classify_presence(driver(0, 0));
  EXPECT_FALSE(zero.present);
  EXPECT_TRUE(starts_with(zero.detail, "no CUDA device: cuDeviceGetCount found 0")) << zero.detail;
}

TEST(CudaDevicePresence, WorkingDriverWithADeviceIsPresent) {
  const auto r = classify_presence(driver(0, 1));
  EXPECT_TRUE(r.present);
  EXPECT_EQ(r.detail, "1 CUDA device, driver 13.0");
  EXPECT_EQ(classify_presence(driver(0, 2)).detail, "2 CUDA devices, driver 13.0");
}

TEST(CudaDevicePresence, ABrokenDriverWhereADeviceNodeExistsIsPresent) {
  // The tests must then run and fail, not skip.
  DriverProbe unopened;
  unopened.open_error = "not found";
  unopened.device_node = "/dev/nvidia0";
  EXPECT_TRUE(classify_presence(unopened).present);
  auto failing = driver(999);
  failing.init_name = "CUDA_ERROR_UNKNOWN";
  EXPECT_FALSE(classify_presence(failing).present);  // no node: nothing says a GPU is there
  failing.device_node = "/dev/nvidia0";
  const auto r = classify_presence(failing);
  EXPECT_TRUE(r.present);
  EXPECT_EQ(r.detail, "a CUDA device node exists (/dev/nvidia0), but cuInit returned "
                      "CUDA_ERROR_UNKNOWN");
}

TEST(CudaDevicePresence, RequiredGpuIsPresentEvenIfNotFound) {
  DriverProbe p;
  p.open_error = "not found";
  p.require = true;
  const auto r = classify_presence(p);
  EXPECT_TRUE(r.present);
  EXPECT_TRUE(starts_with(r.detail, "KVC_TEST_REQUIRE_GPU=1, but no CUDA driver:")) << r.detail;
}

TEST(CudaDevicePresence, ThisMachineIsClassified) {
  const auto& r = cuda_device_presence();
  EXPECT_FALSE(r.detail.empty());
  if (!r.present) {
    EXPECT_TRUE(starts_with(r.detail, "no CUDA driver:") || starts_with(r.detail, "no CUDA device:"))
        << r.detail;
  }
  std::printf("CUDA device: %s (%s)\n", r.present ? "present" : "absent", r.detail.c_str());
}

}  // namespace
}  // namespace kvc::cudatest
