// Bodies of PreprocessRowKernels; included once per instruction set with FASTDET_ROW_KERNELS_NS
// and FASTDET_ROW_KERNELS_GETTER defined. Plain loops the compiler vectorises for its target.
#include <cstdint>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "common/half.h"
#include "ops/preprocess/preprocess_row_kernels.h"

namespace fastdet {
namespace FASTDET_ROW_KERNELS_NS {

static void blend_rows(const uint8_t* __restrict a, const uint8_t* __restrict b, float weight_a,
                       float weight_b, float* __restrict out, int64_t n) {
  if (weight_b == 0.f) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(a[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(a[i]) * weight_a + static_cast<float>(b[i]) * weight_b;
  }
}

static void resample_row(const float* __restrict row, const int32_t* __restrict first,
                         const int32_t* __restrict second, const float* __restrict weight_second,
                         int64_t n, float mul, float add, float* __restrict out) {
  for (int64_t x = 0; x < n; ++x) {
    const float w = weight_second[x];
    const float value = row[first[x]] * (1.f - w) + row[second[x]] * w;
    out[x] = value * mul + add;
  }
}

static void store_half(const float* __restrict in, uint16_t* __restrict out, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i half = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), half);
  }
#endif
  for (; i < n; ++i) out[i] = float_to_half_bits(in[i]);
}

}  // namespace FASTDET_ROW_KERNELS_NS

PreprocessRowKernels FASTDET_ROW_KERNELS_GETTER() {
  return {&FASTDET_ROW_KERNELS_NS::blend_rows, &FASTDET_ROW_KERNELS_NS::resample_row,
          &FASTDET_ROW_KERNELS_NS::store_half};
}

}  // namespace fastdet
