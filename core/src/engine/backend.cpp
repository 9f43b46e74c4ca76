#include "engine/backend.h"

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/error.h"
#include "common/plugin_library.h"

namespace kvc {

std::string cuda_library_path() {
  if (const char* env = std::getenv("KVC_CUDA_LIBRARY"); env != nullptr && *env != '\0')
    return env;
  return (std::filesystem::path(folder_of_libkvc()) / kCudaLibraryName).string();
}

DeviceProvider& open_cuda_provider(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    fail(KVC_ERR_BACKEND, std::string(kCudaLibraryName) + " not found: '" + path +
                              "' does not exist (it is built next to libkvc.so when CUDA is "
                              "available; KVC_CUDA_LIBRARY overrides the path)");
  // Never closed: device models and sessions hold code from it until the process ends.
  const PluginLibrary lib = PluginLibrary::open(path, "CUDA backend", KVC_ERR_BACKEND);
  const auto version = lib.function<uint32_t()>(kCudaVersionSymbol);
  const auto create = lib.function<DeviceProvider*(uint32_t)>(kCudaCreateSymbol);
  lib.require_version("CUDA backend interface", version(), kCudaInterfaceVersion);
  DeviceProvider* provider = create(kCudaInterfaceVersion);
  if (provider == nullptr)
    fail(KVC_ERR_BACKEND, "CUDA backend '" + path + "': " + kCudaCreateSymbol +
                              "() returned NULL (it declined interface version " +
                              std::to_string(kCudaInterfaceVersion) + ")");
  return *provider;
}

DeviceProvider& cuda_provider() {
  // Cached per path (KVC_CUDA_LIBRARY may differ between calls only in tests).
  static std::mutex mutex;
  static std::string cached_path;
  static DeviceProvider* cached = nullptr;
  const std::string path = cuda_library_path();
  std::lock_guard<std::mutex> lock(mutex);
  if (cached == nullptr || cached_path != path) {
    cached = &open_cuda_provider(path);
    cached_path = path;
  }
  return *cached;
}

}  // namespace kvc
