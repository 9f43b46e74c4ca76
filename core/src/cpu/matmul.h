// CPU matrix products over fp32 / bf16 / fp16 weights with fp32 activations and accumulation.
//
// SIMD code is compiled for several x86 (and other) targets with Highway and picked at run time,
// so one binary runs on any x86-64 CPU and uses AVX-512 where present. On CPUs with AVX512_BF16
// an optional fast path for bf16 weights uses the native bf16 dot-product instruction; it needs
// the activations rounded to bf16 and is therefore off by default (see set_bf16_activations).
//
// Determinism: every output element is one dot product summed by one thread in a fixed order,
// so results do not depend on the thread count (nor on timing), only on the SIMD target.
#pragma once

#include <cstdint>
#include <string>

#include "cpu/thread_pool.h"
#include "model/tensor.h"

namespace kvc::cpu {

// y[t, :] = W * x[t, :] (+ bias) for t in [0, n_tokens). x is [n_tokens, W.cols] fp32 row-major,
// y is [n_tokens, W.rows] fp32 row-major, bias is null or W.rows floats. W is in nn.Linear layout
// [rows = out, cols = in]. y must not overlap x or W.
// n_tokens == 1 (decode) streams each weight row once, rows split across the pool's threads;
// n_tokens > 1 (prefill) widens a panel of weight rows to fp32 once and reuses it for all tokens.
// Throws KVC_ERR_INVALID_ARGUMENT on null pointers, negative sizes or an empty matrix with data.
void matmul(const float* x, int64_t n_tokens, const Matrix& W, const float* bias, float* y,
            ThreadPool& pool);

// Same, choosing the bf16 path explicitly instead of the process-wide setting below.
void matmul(const float* x, int64_t n_tokens, const Matrix& W, const float* bias, float* y,
            ThreadPool& pool, bool bf16_activations);

// Process-wide choice for bf16 weights (default false = exact):
//  false: weights widened to fp32 exactly, multiplied by fp32 activations, fp32 accumulation.
//  true:  activations rounded to bf16 (round-to-nearest-even) and multiplied with the native
//         bf16 dot-product instruction (VDPBF16PS). Relative error of each output grows to
//         about 2^-9 * sum|w*x| / |sum w*x| (see docs/cpu-kernels.md). Only takes effect where
//         the CPU has AVX512_BF16; elsewhere the exact path runs. No effect on f32/f16 weights.
void set_bf16_activations(bool enabled);
bool bf16_activations();

// True when the native bf16 dot-product path is available on this CPU.
bool has_native_bf16();

// Name of the Highway target chosen for this CPU, e.g. "AVX3_DL" or "AVX2" (for logs, benches).
std::string simd_target_name();

// sum_i a[i] * b[i] in fp32 (several accumulators, fixed order). Vector helper; the kernel
// bench reads memory with it (attention uses the dedicated kernels below).
float dot_f32(const float* a, const float* b, int64_t n);

// y[i] += alpha * x[i] for i in [0, n). Vector helper (attention uses attention_values).
void axpy_f32(float alpha, const float* x, float* y, int64_t n);



}  // namespace kvc::cpu
