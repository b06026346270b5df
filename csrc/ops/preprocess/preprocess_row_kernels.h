// The per-row loops of the CPU preprocess. This header is compiled twice (baseline x86-64 and
// AVX2+FMA+F16C) in two namespaces; preprocess_cpu.cpp picks one at run time.
#pragma once

#include <cstdint>

namespace fastdet {

struct PreprocessRowKernels {
  // out[i] = a[i] * weight_a + b[i] * weight_b over n bytes.
  void (*blend_rows)(const uint8_t* a, const uint8_t* b, float weight_a, float weight_b, float* out,
                     int64_t n);
  // Horizontal pass over an interleaved 3-channel row: for each output pixel x and channel c,
  // out[c][x] = (row[first[x] + k] * (1 - w[x]) + row[second[x] + k] * w[x]) * mul[c] + add[c]
  // with k = source_channel[c]. `row` must have 4 readable floats past its last pixel.
  // point_sample: every weight is 0 (odd integer downscale ratios), so `second` is not read.
  void (*resample_row)(const float* row, const int32_t* first, const int32_t* second,
                       const float* weight_second, int64_t n, bool point_sample,
                       const int* source_channel, const float* mul, const float* add,
                       float* const* out);
  // IEEE binary16, round to nearest even.
  void (*store_half)(const float* in, uint16_t* out, int64_t n);
};

PreprocessRowKernels preprocess_row_kernels_baseline();
PreprocessRowKernels preprocess_row_kernels_avx2();

}  // namespace fastdet
