// The CUDA backend's model: every weight on the device in one allocation (16-bit matrices,
// fp32 vectors), uploaded once and shared by the model's sessions.
#pragma once

#include <string>
#include <vector>

#include "cuda_util.h"
#include "engine/backend.h"
#include "model/weights.h"

namespace kvc::cuda {

struct DeviceLayer {
  const void *qkv, *attn_out, *fc_in, *fc_out;  // 16-bit, nn.Linear layout [out, in]
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  const float *qkv_b, *attn_out_b, *fc_in_b, *fc_out_b;
};

class CudaModel final : public DeviceModel {
 public:
  // Uploads every weight of `w` to `device`, converting matrices to `dtype` (F16 or BF16).
  CudaModel(const ModelWeights& w, int device, DType dtype);

  std::unique_ptr<ComputeBackend> create_session() override;
  DType dtype() const override { return dtype_; }
  size_t weight_bytes() const override { return bytes_; }
  std::string device_name() const override { return name_; }
  bool bf16() const { return dtype_ == DType::BF16; }
  cudaDataType_t cuda_type() const { return bf16() ? CUDA_R_16BF : CUDA_R_16F; }

  const ModelConfig cfg;
  const int device;
  const void* embed_in = nullptr;
  const void* embed_out = nullptr;
  const float* final_ln_w = nullptr;
  const float* final_ln_b = nullptr;
  std::vector<DeviceLayer> layers;

 private:
  DType dtype_;
  DeviceBuffer arena_;
  size_t bytes_ = 0;
  std::string name_;
};

}  // namespace kvc::cuda
