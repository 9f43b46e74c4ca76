// The CUDA backend's model: weights uploaded once (see cuda_model.h).
#include "cuda_model.h"

#include <algorithm>
#include <array>

#include "host_convert.h"

namespace kvc::cuda {

CudaModel::CudaModel(const ModelWeights& w, int device, DType dtype)
    : cfg(w.config), device(device), dtype_(dtype) {
  KVC_CUDA(cudaSetDevice(device));
  cudaDeviceProp prop{};
  KVC_CUDA(cudaGetDeviceProperties(&prop, device));
  name_ = prop.name;
  // Sizes first, then one allocation for everything (256-byte aligned pieces).
  size_t total = 0;
  const auto reserve = [&total](size_t bytes) {
    const size_t at = total;
    total += (bytes + 255) / 256 * 256;
    return at;
  };
  struct Piece {
    size_t at;
    const Matrix* m;
    const float* v;
    size_t n;
  };
  std::vector<Piece> pieces;
  const auto matrix = [&](const Matrix& m) {
    pieces.push_back({reserve(static_cast<size_t>(m.rows * m.cols) * 2), &m, nullptr, 0});
    return pieces.size() - 1;
  };
  const auto vec = [&](const float* v, size_t n) {
    pieces.push_back({reserve(n * sizeof(float)), nullptr, v, n});
    return pieces.size() - 1;
  };
  const size_t H = static_cast<size_t>(cfg.hidden_size);
  const size_t I = static_cast<size_t>(cfg.intermediate_size);
  const size_t e_in = matrix(w.embed_in), e_out = matrix(w.embed_out);
  const size_t fw = vec(w.final_ln_w, H), fb = vec(w.final_ln_b, H);
  std::vector<std::array<size_t, 12>> idx(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    idx[l] = {matrix(lw.qkv),        matrix(lw.attn_out),     matrix(lw.fc_in),
              matrix(lw.fc_out),     vec(lw.ln1_w, H),        vec(lw.ln1_b, H),
              vec(lw.ln2_w, H),      vec(lw.ln2_b, H),        vec(lw.qkv_b, 3 * H),
              vec(lw.attn_out_b, H), vec(lw.fc_in_b, I),      vec(lw.fc_out_b, H)};
  }
  arena_.resize(total);
  bytes_ = total;
  // Matrices already in the device type are copied straight from the host mapping; others
  // are converted through a pinned staging buffer, a block of rows at a time.
  PinnedBuffer staging;
  constexpr size_t kStagingBytes = 32u << 20;
  for (const Piece& p : pieces) {
    uint8_t* dst = arena_.get<uint8_t>() + p.at;
    if (p.v) {
      KVC_CUDA(cudaMemcpy(dst, p.v, p.n * sizeof(float), cudaMemcpyHostToDevice));
      continue;
    }
    const Matrix& m = *p.m;
    if (m.dtype == dtype) {
      KVC_CUDA(cudaMemcpy(dst, m.data, m.bytes(), cudaMemcpyHostToDevice));
      continue;
    }
    staging.resize(kStagingBytes);
    const int64_t rows_per = std::max<int64_t>(1, kStagingBytes / (2 * m.cols));
    for (int64_t r = 0; r < m.rows; r += rows_per) {
      const int64_t n = std::min(rows_per, m.rows - r);
      convert_rows(m, dtype, r, n, staging.get<uint16_t>());
      KVC_CUDA(cudaMemcpy(dst + static_cast<size_t>(r * m.cols) * 2, staging.get(),
                          static_cast<size_t>(n * m.cols) * 2, cudaMemcpyHostToDevice));
    }
  }
  const auto at = [&](size_t i) -> const void* { return arena_.get<uint8_t>() + pieces[i].at; };
  const auto atf = [&](size_t i) { return static_cast<const float*>(at(i)); };
  embed_in = at(e_in);
  embed_out = at(e_out);
  final_ln_w = atf(fw);
  final_ln_b = atf(fb);
  for (const auto& i : idx)
    layers.push_back({at(i[0]), at(i[1]), at(i[2]), at(i[3]), atf(i[4]), atf(i[5]), atf(i[6]),
                      atf(i[7]), atf(i[8]), atf(i[9]), atf(i[10]), atf(i[11])});
}

}  // namespace kvc::cuda
