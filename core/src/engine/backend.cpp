#include "engine/backend.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/error.h"

namespace kvc {
namespace {

std::string folder_of_this_code() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&folder_of_this_code), &info) == 0 ||
      info.dli_fname == nullptr)
    return ".";
  std::error_code ec;
  const auto p = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? std::filesystem::path(info.dli_fname).parent_path().string()
            : p.parent_path().string();
}

}  // namespace

std::string cuda_library_path() {
  if (const char* env = std::getenv("KVC_CUDA_LIBRARY"); env != nullptr && *env != '\0')
    return env;
  return (std::filesystem::path(folder_of_this_code()) / kCudaLibraryName).string();
}

DeviceProvider& open_cuda_provider(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    fail(KVC_ERR_BACKEND, std::string(kCudaLibraryName) + " not found: '" + path +
                              "' does not exist (it is built next to libkvc.so when CUDA is "
                              "available; KVC_CUDA_LIBRARY overrides the path)");
  // Never closed: device models and sessions hold code from it until the process ends.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    fail(KVC_ERR_BACKEND, "cannot load the CUDA backend '" + path + "': " +
                              (why ? why : "unknown dlopen error"));
  }
  using VersionFn = uint32_t (*)();
  using CreateFn = DeviceProvider* (*)(uint32_t);
  auto version = reinterpret_cast<VersionFn>(dlsym(handle, kCudaVersionSymbol));
  auto create = reinterpret_cast<CreateFn>(dlsym(handle, kCudaCreateSymbol));
  if (version == nullptr || create == nullptr)
    fail(KVC_ERR_BACKEND, "'" + path + "' is not a kvc CUDA backend (it lacks " +
                              kCudaVersionSymbol + " or " + kCudaCreateSymbol + ")");
  if (version() != kCudaInterfaceVersion)
    fail(KVC_ERR_BACKEND, "'" + path + "' implements backend interface version " +
                              std::to_string(version()) + ", this libkvc expects " +
                              std::to_string(kCudaInterfaceVersion) +
                              " (rebuild both from the same tree)");
  DeviceProvider* provider = create(kCudaInterfaceVersion);
  if (provider == nullptr)
    fail(KVC_ERR_BACKEND, "'" + path + "' refused to create its provider");
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
