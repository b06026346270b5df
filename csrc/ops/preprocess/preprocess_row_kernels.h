// The per-row loops of the CPU preprocess. This header is compiled twice (baseline x86-64 and
// AVX2+FMA+F16C) in two namespaces; preprocess_cpu.cpp picks one at run time.
#pragma once

#include <cstdint>

namespace fastdet {

struct PreprocessRowKernels {
  // out[i] = a[i] * weight_a + b[i] * weight_b over n bytes.
  void (*blend_rows)(const uint8_t* a, const uint8_t* b, float weight_a, float weight_b, float* out,
                     int64_t n);
  // out[x] = (row[first[x]] * (1 - w[x]) + row[second[x]] * w[x]) * mul + add.
  void (*resample_row)(const float* row, const int32_t* first, const int32_t* second,
                       const float* weight_second, int64_t n, float mul, float add, float* out);
  // IEEE binary16, round to nearest even.
  void (*store_half)(const float* in, uint16_t* out, int64_t n);
};

PreprocessRowKernels preprocess_row_kernels_baseline();
PreprocessRowKernels preprocess_row_kernels_avx2();

}  // namespace fastdet
