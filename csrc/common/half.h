// IEEE binary16 conversion, round to nearest even, for hosts and builds without F16C.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace fastdet {

FASTDET_HOST_DEVICE uint32_t float_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

FASTDET_HOST_DEVICE float bits_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

FASTDET_HOST_DEVICE uint16_t float_to_half_bits(float value) {
  const uint32_t bits = float_bits(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  constexpr uint32_t kHalfOverflow = (127u + 16u) << 23;  // 65536: at or above it, infinity
  constexpr uint32_t kHalfNormalMin = 113u << 23;         // 2^-14, the smallest normal half
  if (magnitude >= kHalfOverflow) {
    const bool is_nan = magnitude > 0x7f800000u;
    // 65520 and up round to infinity; the rounding below handles [65504, 65520).
    return static_cast<uint16_t>(sign | (is_nan ? 0x7e00u : 0x7c00u));
  }
  if (magnitude < kHalfNormalMin) {
    // Subnormal half: adding 0.5 makes the FPU round the mantissa at the half's precision.
    constexpr uint32_t kSubnormalShift = 126u << 23;
    const float shifted = bits_float(magnitude) + bits_float(kSubnormalShift);
    return static_cast<uint16_t>(sign | (float_bits(shifted) - kSubnormalShift));
  }
  const uint32_t odd_mantissa = (magnitude >> 13) & 1u;
  uint32_t rebased = magnitude + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd_mantissa;
  return static_cast<uint16_t>(sign | (rebased >> 13));
}

}  // namespace fastdet
