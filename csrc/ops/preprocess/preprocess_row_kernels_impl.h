// Bodies of PreprocessRowKernels; included once per instruction set with FASTDET_ROW_KERNELS_NS
// and FASTDET_ROW_KERNELS_GETTER defined. Plain loops the compiler vectorises for its target.
#include <cstdint>

#if defined(__SSE2__)
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
                         int64_t n, bool point_sample, const int* source_channel, const float* mul,
                         const float* add, float* const* out) {
  int64_t x = 0;
#if defined(__SSE2__)
  // Four output pixels at a time: one unaligned load fetches a pixel's 3 channels (plus one
  // spare lane); a 4x4 transpose turns pixels-by-channels into one vector per channel.
  // Indexed by source channel, so the loop body needs no dynamic register indexing
  // (source_channel is a permutation).
  float* dst[3];
  __m128 muls[3], adds[3];
  for (int c = 0; c < 3; ++c) {
    dst[source_channel[c]] = out[c];
    muls[source_channel[c]] = _mm_set1_ps(mul[c]);
    adds[source_channel[c]] = _mm_set1_ps(add[c]);
  }
  float* __restrict dst0 = dst[0];
  float* __restrict dst1 = dst[1];
  float* __restrict dst2 = dst[2];
  for (; x + 4 <= n; x += 4) {
    __m128 pixel[4];
    if (point_sample) {
      for (int k = 0; k < 4; ++k) pixel[k] = _mm_loadu_ps(row + first[x + k]);
    } else {
      for (int k = 0; k < 4; ++k) {
        const __m128 w = _mm_set1_ps(weight_second[x + k]);
        const __m128 a = _mm_loadu_ps(row + first[x + k]);
        const __m128 b = _mm_loadu_ps(row + second[x + k]);
        pixel[k] = _mm_add_ps(a, _mm_mul_ps(_mm_sub_ps(b, a), w));
      }
    }
    _MM_TRANSPOSE4_PS(pixel[0], pixel[1], pixel[2], pixel[3]);
    _mm_storeu_ps(dst0 + x, _mm_add_ps(_mm_mul_ps(pixel[0], muls[0]), adds[0]));
    _mm_storeu_ps(dst1 + x, _mm_add_ps(_mm_mul_ps(pixel[1], muls[1]), adds[1]));
    _mm_storeu_ps(dst2 + x, _mm_add_ps(_mm_mul_ps(pixel[2], muls[2]), adds[2]));
  }
#endif
  for (; x < n; ++x) {
    const float w = weight_second[x];
    for (int c = 0; c < 3; ++c) {
      const float a = row[first[x] + source_channel[c]];
      const float b = row[second[x] + source_channel[c]];
      out[c][x] = (a + (b - a) * w) * mul[c] + add[c];
    }
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
