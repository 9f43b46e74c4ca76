// The entry points of libkvc_cuda.so: the provider libkvc asks for a device and a model.
#include <memory>
#include <string>

#include "cuda_model.h"
#include "host_convert.h"

namespace kvc::cuda {
namespace {

class CudaProvider final : public DeviceProvider {
 public:
  void probe(int device) override {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
      fail(KVC_ERR_BACKEND, std::string("no CUDA device: cudaGetDeviceCount returned ") +
                                cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
    if (count == 0) fail(KVC_ERR_BACKEND, "no CUDA device: cudaGetDeviceCount found 0 devices");
    if (device < 0 || device >= count)
      fail(KVC_ERR_BACKEND, "kvc_model_options.device: CUDA device " + std::to_string(device) +
                                " does not exist (" + std::to_string(count) + " found)");
    cudaDeviceProp prop{};
    KVC_CUDA(cudaGetDeviceProperties(&prop, device));
    if (prop.major < 8)
      fail(KVC_ERR_BACKEND, std::string("CUDA device ") + std::to_string(device) + " (" +
                                prop.name + ") has compute capability " +
                                std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                                "; the CUDA backend needs 8.0 or newer");
  }

  std::unique_ptr<DeviceModel> load(const ModelWeights& weights, int device,
                                    DType dtype) override {
    probe(device);
    require(dtype == DType::F16 || dtype == DType::BF16, KVC_ERR_UNSUPPORTED,
            std::string("the CUDA backend stores weights in float16 or bfloat16, not ") +
                dtype_name(dtype));
    require(weights.config.head_dim <= 256, KVC_ERR_UNSUPPORTED,
            "the CUDA backend supports head_dim up to 256, the model has " +
                std::to_string(weights.config.head_dim));
    return std::make_unique<CudaModel>(weights, device, dtype);
  }
};

}  // namespace
}  // namespace kvc::cuda


extern "C" __attribute__((visibility("default"))) uint32_t kvc_cuda_backend_interface_version() {
  return kvc::kCudaInterfaceVersion;
}

extern "C" __attribute__((visibility("default"))) kvc::DeviceProvider* kvc_cuda_backend_create(
    uint32_t interface_version) {
  if (interface_version != kvc::kCudaInterfaceVersion) return nullptr;
  static kvc::cuda::CudaProvider provider;
  return &provider;
}
