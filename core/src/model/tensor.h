// Minimal tensor vocabulary shared by the weight loader and the compute kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvc {

// Storage types of weights. Compute is always fp32.
enum class DType : uint8_t { F32, BF16, F16 };

inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
  }
  return "?";
}

// A read-only weight matrix in PyTorch nn.Linear layout: `rows` output features, each a
// contiguous row of `cols` input features (row-major [rows, cols]). Decode reads each row once
// per token, so this layout streams memory sequentially.
struct Matrix {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;  // rows * cols elements of `dtype`, 64-byte aligned

  size_t bytes() const { return static_cast<size_t>(rows * cols) * dtype_size(dtype); }
  const uint8_t* row_ptr(int64_t r) const {
    return static_cast<const uint8_t*>(data) + static_cast<size_t>(r * cols) * dtype_size(dtype);
  }
};

}  // namespace kvc
