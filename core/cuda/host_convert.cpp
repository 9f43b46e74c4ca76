#include "host_convert.h"

#include <cmath>
#include <cstring>

#include "common/error.h"
#include "model/dtype_convert.h"

namespace kvc::cuda {

void convert_rows(const Matrix& m, DType to, int64_t row0, int64_t n_rows, uint16_t* out) {
  require(to == DType::F16 || to == DType::BF16, KVC_ERR_INTERNAL,
          "convert_rows: the device stores float16 or bfloat16 only");
  require(row0 >= 0 && n_rows >= 0 && row0 + n_rows <= m.rows, KVC_ERR_INTERNAL,
          "convert_rows: rows out of range");
  const size_t count = static_cast<size_t>(n_rows * m.cols);
  const uint8_t* src = m.row_ptr(row0);
  if (m.dtype == to) {
    std::memcpy(out, src, count * sizeof(uint16_t));
    return;
  }
  const auto* s16 = reinterpret_cast<const uint16_t*>(src);
  const auto* s32 = reinterpret_cast<const float*>(src);
  for (size_t i = 0; i < count; ++i) {
    float f = 0.0f;
    switch (m.dtype) {
      case DType::F32: std::memcpy(&f, s32 + i, sizeof(float)); break;
      case DType::F16: f = cvt::f16_to_f32(s16[i]); break;
      case DType::BF16: f = cvt::bf16_to_f32(s16[i]); break;
    }
    out[i] = to == DType::F16 ? cvt::f32_to_f16(f) : cvt::f32_to_bf16(f);
  }
}

void rotary_table(int rotary_ndims, float base, int64_t n_positions, std::vector<float>& cos,
                  std::vector<float>& sin) {
  const int half = rotary_ndims / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_ndims);
    inv_freq[static_cast<size_t>(i)] = 1.0f / std::pow(base, exponent);
  }
  cos.resize(static_cast<size_t>(n_positions) * half);
  sin.resize(static_cast<size_t>(n_positions) * half);
  for (int64_t p = 0; p < n_positions; ++p) {
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[static_cast<size_t>(i)];
      const size_t k = static_cast<size_t>(p) * half + i;
      cos[k] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[k] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

}  // namespace kvc::cuda
