// Whether this machine has a CUDA device, found WITHOUT the backend under test: the CUDA
// driver itself (dlopen of libcuda.so.1, cuInit, cuDeviceGetCount) and the device nodes.
//
// The GPU tests use it to choose between running and skipping: where a device is present they
// run, and any failure to load or run the CUDA backend fails them; they skip only when there is
// no driver or no device, saying which. Asking the backend (libkvc_cuda.so) instead would make a
// broken backend look like a machine without a GPU: a missing libcublas, an undefined symbol
// or a failing cudart would all read as "skip".
//
// Decision (classify_presence, unit-tested in presence_test.cpp):
//   KVC_TEST_REQUIRE_GPU=1            -> present (tools/gpu_check.sh sets it where nvidia-smi
//                                        lists a GPU: a failing detection then fails too)
//   libcuda.so.1 cannot be opened      -> "no CUDA driver" (present if /dev/nvidia0 exists)
//   cuInit: CUDA_ERROR_STUB_LIBRARY    -> "no CUDA driver" (the toolkit's stub; idem)
//   cuInit: CUDA_ERROR_NO_DEVICE, or 0 devices -> "no CUDA device" (the driver's word wins over
//                                        device nodes, e.g. CUDA_VISIBLE_DEVICES="")
//   cuInit: any other error            -> present if a device node exists (fails), else
//                                        "no CUDA device"
//   cuInit OK and >= 1 device          -> present
#pragma once

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace kvc::cudatest {

struct CudaDevicePresence {
  bool present = false;
  // Present: what was found ("1 CUDA device, driver 13.0"). Absent: the skip reason, starting
  // with "no CUDA driver:" or "no CUDA device:".
  std::string detail;
};

// What the probe saw; classify_presence turns it into the decision (pure, for the unit tests).
struct DriverProbe {
  bool opened = false;        // libcuda.so.1 loaded
  std::string open_error;     // dlerror() when not
  bool symbols = false;       // cuInit and cuDeviceGetCount found
  int init_result = -1;       // CUresult of cuInit(0)
  std::string init_name;      // its name (cuGetErrorName), if known
  int count = 0;              // cuDeviceGetCount, when cuInit succeeded
  int driver_version = 0;     // cuDriverGetVersion, e.g. 13000
  std::string device_node;    // "/dev/nvidia0" or "/proc/driver/nvidia/gpus/..." if one exists
  bool visible_set = false;   // CUDA_VISIBLE_DEVICES is set
  std::string visible;        // and its value
  bool require = false;       // KVC_TEST_REQUIRE_GPU=1
};

constexpr int kCudaErrorStubLibrary = 34;  // CUDA_ERROR_STUB_LIBRARY
constexpr int kCudaErrorNoDevice = 100;    // CUDA_ERROR_NO_DEVICE

inline CudaDevicePresence classify_presence(const DriverProbe& p) {
  const std::string visible =
      p.visible_set ? " (CUDA_VISIBLE_DEVICES='" + p.visible + "')" : "";
  const std::string init =
      p.init_name.empty() ? "error " + std::to_string(p.init_result) : p.init_name;
  CudaDevicePresence r;
  // A driver problem: no device if nothing else says a GPU is there, else a failure.
  auto driver_problem = [&](const std::string& absent_kind, const std::string& what) {
    if (p.device_node.empty()) {
      r.detail = absent_kind + what;
    } else {
      r.present = true;
      r.detail = "a CUDA device node exists (" + p.device_node + "), but " + what;
    }
  };
  if (!p.opened) {
    driver_problem("no CUDA driver: ", "libcuda.so.1 cannot be opened (" + p.open_error + ")");
  } else if (!p.symbols) {
    driver_problem("no CUDA driver: ", "libcuda.so.1 exports no cuInit/cuDeviceGetCount");
  } else if (p.init_result == kCudaErrorStubLibrary) {
    driver_problem("no CUDA driver: ", "libcuda.so.1 is the CUDA toolkit's stub");
  } else if (p.init_result == kCudaErrorNoDevice) {
    r.detail = "no CUDA device: cuInit returned CUDA_ERROR_NO_DEVICE" + visible;
  } else if (p.init_result != 0) {
    driver_problem("no CUDA device: ", "cuInit returned " + init);
  } else if (p.count <= 0) {
    r.detail = "no CUDA device: cuDeviceGetCount found 0" + visible;
  } else {
    r.present = true;
    r.detail = std::to_string(p.count) + " CUDA device" + (p.count == 1 ? "" : "s") +
               ", driver " + std::to_string(p.driver_version / 1000) + "." +
               std::to_string(p.driver_version % 1000 / 10);
  }
  if (p.require && !r.present) {
    r.present = true;
    r.detail = "KVC_TEST_REQUIRE_GPU=1, but " + r.detail;
  }
  return r;
}

inline DriverProbe probe_cuda_driver() {
  DriverProbe p;
  if (const char* r = std::getenv("KVC_TEST_REQUIRE_GPU")) p.require = std::string(r) == "1";
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) {
    p.visible_set = true;
    p.visible = v;
  }
  std::error_code ec;
  if (std::filesystem::exists("/dev/nvidia0", ec)) {
    p.device_node = "/dev/nvidia0";
  } else {
    for (const auto& e : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
      p.device_node = e.path().string();
      break;
    }
  }
  // The library is never closed: the backend loads the same driver in this process.
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* e = dlerror();
    p.open_error = e ? e : "unknown error";
    return p;
  }
  p.opened = true;
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  using NameFn = int (*)(int, const char**);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<CountFn>(dlsym(lib, "cuDeviceGetCount"));
  auto version = reinterpret_cast<CountFn>(dlsym(lib, "cuDriverGetVersion"));
  auto name = reinterpret_cast<NameFn>(dlsym(lib, "cuGetErrorName"));
  if (init == nullptr || count == nullptr) return p;
  p.symbols = true;
  p.init_result = init(0);
  if (p.init_result != 0 && name != nullptr) {
    const char* n = nullptr;
    if (name(p.init_result, &n) == 0 && n != nullptr) p.init_name = n;
  }
  if (p.init_result == 0 && count(&p.count) != 0) p.count = 0;
  if (version != nullptr && version(&p.driver_version) != 0) p.driver_version = 0;
  return p;
}

// Probed once per process.
inline const CudaDevicePresence& cuda_device_presence() {
  static const CudaDevicePresence presence = classify_presence(probe_cuda_driver());
  return presence;
}

}  // namespace kvc::cudatest
