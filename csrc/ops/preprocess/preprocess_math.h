// Per-element arithmetic of the preprocess, shared by the CPU and CUDA kernels so that both give
// the same bits (CUDA builds with --fmad=false, the CPU kernels with -ffp-contract=off: no
// expression here may be fused into one rounding on either side).
//
// Two resamplers (preprocess.h, Resample):
// - OpenCV: what cv2.resize(uint8 image, INTER_LINEAR) computes, bit for bit. Facts from OpenCV's
//   modules/imgproc/src/resize.cpp, established against cv2 5.0.0 and 4.14.0 over thousands of
//   sizes (benchmarks/results/2026-12-01-exact-resize):
//   * source position (dst + 0.5) * scale - 0.5 in double, scale = 1 / (dst_size / src_size),
//     then rounded to float; its floor is the first tap, the float remainder the fraction f;
//   * weights round((1 - f) * 2048) and round(f * 2048) (11-bit fixed point, ties to even);
//   * columns: left of the first pixel centre or at/after the last one, the edge pixel alone
//     (f = 0); rows: both rows clamped to the image but the weights kept from the unclamped f;
//   * a horizontal sum per source row, a * w0 + b * w1 (pixels times 2048), then the vertical
//     step of OpenCV's vector code: ((h0 >> 4) * w0 >> 16) + ((h1 >> 4) * w1 >> 16), + 2, >> 2;
//   * an exact 2x downscale of both sides is INTER_AREA: (sum of the 2x2 block + 2) >> 2.
// - Float: the same taps in float32, rows blended first, then columns, no rounding to 8 bits.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace fastdet {

// Source coordinate of an output pixel's centre, as OpenCV computes it (double, then float).
FASTDET_HOST_DEVICE float source_position(int64_t dst_index, double src_per_dst) {
  return static_cast<float>((static_cast<double>(dst_index) + 0.5) * src_per_dst - 0.5);
}

FASTDET_HOST_DEVICE int64_t floor_to_int(float value) {
  int64_t i = static_cast<int64_t>(value);
  if (static_cast<float>(i) > value) --i;
  return i;
}

// ---------------------------------------------------------------------------------------------
// Float resampling

// One bilinear tap pair along an axis: both clamped to the image, the weight of `second`.
struct LinearTap {
  int64_t first;
  int64_t second;
  float weight_second;
};

FASTDET_HOST_DEVICE LinearTap linear_tap(int64_t dst_index, double src_per_dst, int64_t src_size) {
  const float position = source_position(dst_index, src_per_dst);
  int64_t first = floor_to_int(position);
  float weight = position - static_cast<float>(first);
  if (first < 0) {
    first = 0;
    weight = 0.f;
  }
  if (first >= src_size - 1) {
    first = src_size - 1;
    weight = 0.f;
  }
  const int64_t second = first + 1 < src_size ? first + 1 : src_size - 1;
  return {first, second, weight};
}

// ---------------------------------------------------------------------------------------------
// OpenCV's uint8 INTER_LINEAR in fixed point

constexpr int kFixedPointBits = 11;  // OpenCV's INTER_RESIZE_COEF_BITS
constexpr int kFixedPointOne = 1 << kFixedPointBits;

// Two source indices along an axis with their weights in 1/2048.
struct FixedTap {
  int64_t first;
  int64_t second;
  int32_t weight_first;
  int32_t weight_second;
};

// OpenCV rounds a float to int to nearest, ties to even (cvRound). lrint rounds in the current
// mode, nearest-even unless a caller changed it, and is one instruction on x86-64.
FASTDET_HOST_DEVICE int32_t round_half_even(float value) {
#if defined(__CUDA_ARCH__)
  return __float2int_rn(value);
#else
  return static_cast<int32_t>(std::lrint(value));
#endif
}

FASTDET_HOST_DEVICE FixedTap fixed_weights(int64_t first, int64_t second, float fraction) {
  return {first, second, round_half_even((1.f - fraction) * static_cast<float>(kFixedPointOne)),
          round_half_even(fraction * static_cast<float>(kFixedPointOne))};
}

// A column: outside the span of pixel centres the edge pixel alone (its weight 2048).
FASTDET_HOST_DEVICE FixedTap opencv_column_tap(int64_t dst_index, double src_per_dst,
                                               int64_t src_size) {
  const float position = source_position(dst_index, src_per_dst);
  int64_t first = floor_to_int(position);
  float fraction = position - static_cast<float>(first);
  if (first < 0) {
    first = 0;
    fraction = 0.f;
  }
  if (first >= src_size - 1) {
    first = src_size - 1;
    fraction = 0.f;
  }
  const int64_t second = first + 1 < src_size ? first + 1 : src_size - 1;
  return fixed_weights(first, second, fraction);
}

// A row: both rows clamped to the image, the weights from the unclamped position (so a row above
// the first or below the last blends the edge row with itself, rounding included).
FASTDET_HOST_DEVICE FixedTap opencv_row_tap(int64_t dst_index, double src_per_dst,
                                            int64_t src_size) {
  const float position = source_position(dst_index, src_per_dst);
  const int64_t first = floor_to_int(position);
  const float fraction = position - static_cast<float>(first);
  const int64_t last = src_size - 1;
  const int64_t a = first < 0 ? 0 : (first > last ? last : first);
  const int64_t b = first + 1 < 0 ? 0 : (first + 1 > last ? last : first + 1);
  return fixed_weights(a, b, fraction);
}

// The horizontal step: one source row's two pixels, in 1/2048 of a level.
FASTDET_HOST_DEVICE int32_t opencv_horizontal(int32_t first, int32_t second, int32_t weight_first,
                                              int32_t weight_second) {
  return first * weight_first + second * weight_second;
}

// The vertical step as OpenCV's vector code rounds it (the 8-bit result).
FASTDET_HOST_DEVICE int32_t opencv_vertical(int32_t first, int32_t second, int32_t weight_first,
                                            int32_t weight_second) {
  return ((((first >> 4) * weight_first) >> 16) + (((second >> 4) * weight_second) >> 16) + 2) >> 2;
}

// INTER_LINEAR on an exact 2x downscale of both sides is OpenCV's INTER_AREA 2x2 mean.
FASTDET_HOST_DEVICE bool opencv_halves(int64_t src_height, int64_t src_width, int64_t dst_height,
                                       int64_t dst_width) {
  return src_width == 2 * dst_width && src_height == 2 * dst_height;
}

FASTDET_HOST_DEVICE int32_t opencv_mean_2x2(int32_t a, int32_t b, int32_t c, int32_t d) {
  return (a + b + c + d + 2) >> 2;
}

// The output value of an 8-bit level: (level * scale - mean) / std evaluated in double and
// rounded once to float32, which is what `image.astype(np.float32) / 255` (correctly rounded
// division) and a float64 reference chain both give.
FASTDET_HOST_DEVICE float level_value(int32_t level, double scale, double mean, double std) {
  return static_cast<float>((static_cast<double>(level) * scale - mean) / std);
}

}  // namespace fastdet
