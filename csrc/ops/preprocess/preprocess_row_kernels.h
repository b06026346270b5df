// The per-row loops of the CPU preprocess. This header is compiled twice (baseline x86-64 and
// AVX2+FMA+F16C) in two namespaces; preprocess_cpu.cpp picks one at run time. Both variants give
// the same bits (the OpenCV path is integer arithmetic; no float expression is contracted).
#pragma once

#include <cstdint>

namespace fastdet {

struct PreprocessRowKernels {
  // Resample::Float, vertical pass: out[i] = a[i] * weight_a + b[i] * weight_b over n bytes.
  void (*blend_rows)(const uint8_t* a, const uint8_t* b, float weight_a, float weight_b, float* out,
                     int64_t n);
  // Resample::Float, horizontal pass over an interleaved 3-channel row: for each output pixel x
  // and channel c, out[c][x] = (row[first[x] + k] * (1 - w[x]) + row[second[x] + k] * w[x]) *
  // mul[c] + add[c] with k = source_channel[c]. `row` must have 4 readable floats past its last
  // pixel. point_sample: every weight is 0 (odd integer downscale ratios), so `second` is not read.
  void (*resample_row)(const float* row, const int32_t* first, const int32_t* second,
                       const float* weight_second, int64_t n, bool point_sample,
                       const int* source_channel, const float* mul, const float* add,
                       float* const* out);
  // Resample::OpenCV, one output row of n pixels from the two packed 3-channel source rows it
  // blends (preprocess_math.h): for pixel x and channel k,
  //   h_r = opencv_horizontal(r[offset[x] + k], r[offset[x] + 3 + k], weights[8x], weights[8x+1])
  //   out[3x + k] = opencv_vertical(h_a, h_b, weight_a, weight_b).
  // weights holds 8 int16 per pixel, (w0, w1, w0, w1, w0, w1, 0, 0), the layout the vector code
  // multiplies by. Pixels below vector_end may read 16 bytes from r + offset[x]; every pixel reads
  // 6 bytes there.
  void (*opencv_linear_row)(const uint8_t* a, const uint8_t* b, const int32_t* offset,
                            const int16_t* weights, int64_t vector_end, int64_t n, int32_t weight_a,
                            int32_t weight_b, uint8_t* out);
  // Resample::OpenCV on an exact 2x downscale: out[3x + k] = opencv_mean_2x2 of pixels 2x and
  // 2x + 1 of rows a and b, channel k; reads 6n bytes of each row.
  void (*opencv_halve_row)(const uint8_t* a, const uint8_t* b, int64_t n, uint8_t* out);
  // 8-bit interleaved row to channel planes through per-channel tables of 256 values:
  // out[c][x] = levels[256 * c + row[3x + source_channel[c]]]; reads the row's 3n bytes only.
  void (*map_levels)(const uint8_t* row, int64_t n, const int* source_channel, const float* levels,
                     float* const* out);
  // IEEE binary16, round to nearest even.
  void (*store_half)(const float* in, uint16_t* out, int64_t n);
};

PreprocessRowKernels preprocess_row_kernels_baseline();
PreprocessRowKernels preprocess_row_kernels_avx2();

// The variant this CPU runs ("avx2" unless FASTDET_CPU_KERNELS=baseline or the CPU lacks it).
const PreprocessRowKernels& preprocess_row_kernels();

}  // namespace fastdet
