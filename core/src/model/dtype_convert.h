// Scalar conversions between float32 and the 16-bit storage types, bit-exact with PyTorch:
// round-to-nearest-even, overflow to infinity, subnormals kept, NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvc::cvt {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // canonical quiet NaN, as torch
  // Adding 0x7fff plus the lowest kept bit rounds ties to even; carries may reach infinity.
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float32
    return f32_from_bits(sign | f32_bits(static_cast<float>(mant) * 0x1p-24f));
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u)  // inf, or NaN keeping its top payload bits (always quiet)
    return sign | 0x7c00u | (u > 0x7f800000u ? 0x200u | ((u >> 13) & 0x3ffu) : 0u);
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (u < 0x38800000u) {
    // Below 2^-14: a float32 add with 0.5 (ulp 2^-24) rounds to the half subnormal grid with
    // the FPU's ties-to-even; the low mantissa bits are the result (1024 = smallest normal).
    const float t = f32_from_bits(u) + 0.5f;
    return sign | static_cast<uint16_t>(f32_bits(t) - 0x3f000000u);
  }
  u += 0xc8000fffu + ((u >> 13) & 1u);  // rebias exponent (-112 << 23) and round to even
  return sign | static_cast<uint16_t>(u >> 13);
}

}  // namespace kvc::cvt
