// Host-side preparation of what the device reads (pure C++, no CUDA): weight matrices
// converted to the device's 16-bit type, and the rotary cos/sin table.
#pragma once

#include <cstdint>
#include <vector>

#include "model/tensor.h"

namespace kvc::cuda {

// Converts rows [row0, row0 + n_rows) of `m` to `to` (F16 or BF16) into `out`
// (n_rows * m.cols values), bit-exact with PyTorch's .to(dtype) (round to nearest even).
// A matrix already stored as `to` is copied unchanged.
void convert_rows(const Matrix& m, DType to, int64_t row0, int64_t n_rows, uint16_t* out);

// cos and sin of the rotary angles for positions [0, n_positions), rotary_ndims/2 per row,
// computed exactly as the CPU backend (RotaryTable) does so both rotate identically.
void rotary_table(int rotary_ndims, float base, int64_t n_positions, std::vector<float>& cos,
                  std::vector<float>& sin);

}  // namespace kvc::cuda
