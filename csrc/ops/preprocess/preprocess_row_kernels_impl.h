// Bodies of PreprocessRowKernels; included once per instruction set with FASTDET_ROW_KERNELS_NS
// and FASTDET_ROW_KERNELS_GETTER defined. Plain loops the compiler vectorises for its target.
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "common/half.h"
#include "ops/preprocess/preprocess_math.h"
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

static void opencv_linear_row(const uint8_t* __restrict a, const uint8_t* __restrict b,
                              const int32_t* __restrict offset, const int16_t* __restrict weights,
                              int64_t vector_end, int64_t n, int32_t weight_a, int32_t weight_b,
                              uint8_t* __restrict out) {
  int64_t x = 0;
#if defined(__AVX2__)
  // Four pixels a step, two per 128-bit lane: a pixel and its right neighbour (6 bytes) are
  // spread to int16 pairs (c, c') and multiplied-added with (w0, w1): the three horizontal sums
  // of a pixel land in one lane's int32s. >> 4 and a pack to int16, then the vertical step in
  // int16 exactly as OpenCV's vector code (high half of the product, + 2, >> 2).
  const __m256i spread = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
                                          0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
  const __m128i gather12 = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  const __m256i wa = _mm256_set1_epi16(static_cast<int16_t>(weight_a));
  const __m256i wb = _mm256_set1_epi16(static_cast<int16_t>(weight_b));
  const __m256i two = _mm256_set1_epi16(2);
  auto horizontal = [&](const uint8_t* row, int64_t i, const __m256i& w) {
    const __m256i pixels =
        _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(row + offset[i + 1]),
                            reinterpret_cast<const __m128i*>(row + offset[i]));
    return _mm256_srai_epi32(_mm256_madd_epi16(_mm256_shuffle_epi8(pixels, spread), w), 4);
  };
  for (; x + 4 <= vector_end; x += 4) {
    const __m256i w01 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(weights + 8 * x));
    const __m256i w23 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(weights + 8 * x + 16));
    // int16 lanes: (x, x + 2) in the low half, (x + 1, x + 3) in the high half; 4 per pixel.
    const __m256i ha = _mm256_packs_epi32(horizontal(a, x, w01), horizontal(a, x + 2, w23));
    const __m256i hb = _mm256_packs_epi32(horizontal(b, x, w01), horizontal(b, x + 2, w23));
    const __m256i sum = _mm256_add_epi16(_mm256_mulhi_epi16(ha, wa), _mm256_mulhi_epi16(hb, wb));
    const __m256i level = _mm256_srai_epi16(_mm256_add_epi16(sum, two), 2);
    const __m256i bytes = _mm256_packus_epi16(level, level);
    const __m128i pixels =
        _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
    const __m128i packed = _mm_shuffle_epi8(pixels, gather12);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + 3 * x), packed);
    const int32_t last = _mm_cvtsi128_si32(_mm_srli_si128(packed, 8));
    std::memcpy(out + 3 * x + 8, &last, 4);
  }
#else
  (void)vector_end;
#endif
  for (; x < n; ++x) {
    const uint8_t* pa = a + offset[x];
    const uint8_t* pb = b + offset[x];
    const int32_t w0 = weights[8 * x];
    const int32_t w1 = weights[8 * x + 1];
    for (int k = 0; k < 3; ++k) {
      const int32_t ha = opencv_horizontal(pa[k], pa[k + 3], w0, w1);
      const int32_t hb = opencv_horizontal(pb[k], pb[k + 3], w0, w1);
      out[3 * x + k] = static_cast<uint8_t>(opencv_vertical(ha, hb, weight_a, weight_b));
    }
  }
}

static void opencv_halve_row(const uint8_t* __restrict a, const uint8_t* __restrict b, int64_t n,
                             uint8_t* __restrict out) {
  int64_t x = 0;
#if defined(__AVX2__)
  // Four output pixels a step, two per lane: the bytes of each horizontal pair made adjacent,
  // added pairwise to int16 by maddubs, both rows summed, then (sum + 2) >> 2.
  const __m256i pairs = _mm256_setr_epi8(0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11, -1, -1, -1, -1, 0, 3,
                                         1, 4, 2, 5, 6, 9, 7, 10, 8, 11, -1, -1, -1, -1);
  const __m128i gather12 = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, -1, -1, -1, -1);
  const __m256i ones = _mm256_set1_epi8(1);
  const __m256i two = _mm256_set1_epi16(2);
  // Each step reads 16 bytes from 6x + 12: the last pixels go to the scalar loop.
  for (; x + 5 <= n; x += 4) {
    const __m256i ra = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(a + 6 * x + 12),
                                           reinterpret_cast<const __m128i*>(a + 6 * x));
    const __m256i rb = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b + 6 * x + 12),
                                           reinterpret_cast<const __m128i*>(b + 6 * x));
    const __m256i sum =
        _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_shuffle_epi8(ra, pairs), ones),
                         _mm256_maddubs_epi16(_mm256_shuffle_epi8(rb, pairs), ones));
    const __m256i level = _mm256_srli_epi16(_mm256_add_epi16(sum, two), 2);
    const __m256i bytes = _mm256_packus_epi16(level, level);
    const __m128i halves =
        _mm_unpacklo_epi64(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
    const __m128i packed = _mm_shuffle_epi8(halves, gather12);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + 3 * x), packed);
    const int32_t last = _mm_cvtsi128_si32(_mm_srli_si128(packed, 8));
    std::memcpy(out + 3 * x + 8, &last, 4);
  }
#endif
  for (; x < n; ++x) {
    for (int k = 0; k < 3; ++k) {
      out[3 * x + k] = static_cast<uint8_t>(
          opencv_mean_2x2(a[6 * x + k], a[6 * x + 3 + k], b[6 * x + k], b[6 * x + 3 + k]));
    }
  }
}

static void map_levels(const uint8_t* __restrict row, int64_t n, const int* source_channel,
                       const float* levels, float* const* out) {
  for (int c = 0; c < 3; ++c) {
    const int k = source_channel[c];
    const float* table = levels + 256 * c;
    float* __restrict dst = out[c];
    int64_t x = 0;
#if defined(__AVX2__)
    // Eight pixels a step: channel k's bytes of 24 gathered by two shuffles (bytes 0-15 and
    // 8-23), widened to int32 and looked up in the channel's table.
    alignas(16) int8_t low_index[16];
    alignas(16) int8_t high_index[16];
    for (int j = 0; j < 16; ++j) low_index[j] = high_index[j] = -1;
    for (int j = 0; j < 8; ++j) {
      const int byte = 3 * j + k;
      if (byte < 16) {
        low_index[j] = static_cast<int8_t>(byte);
      } else {
        high_index[j] = static_cast<int8_t>(byte - 8);
      }
    }
    const __m128i low_shuffle = _mm_load_si128(reinterpret_cast<const __m128i*>(low_index));
    const __m128i high_shuffle = _mm_load_si128(reinterpret_cast<const __m128i*>(high_index));
    for (; x + 8 <= n; x += 8) {
      const uint8_t* p = row + 3 * x;
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8));
      const __m128i bytes =
          _mm_or_si128(_mm_shuffle_epi8(lo, low_shuffle), _mm_shuffle_epi8(hi, high_shuffle));
      _mm256_storeu_ps(dst + x, _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(bytes), 4));
    }
#endif
    for (; x < n; ++x) dst[x] = table[row[3 * x + k]];
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
  return {&FASTDET_ROW_KERNELS_NS::blend_rows,        &FASTDET_ROW_KERNELS_NS::resample_row,
          &FASTDET_ROW_KERNELS_NS::opencv_linear_row, &FASTDET_ROW_KERNELS_NS::opencv_halve_row,
          &FASTDET_ROW_KERNELS_NS::map_levels,        &FASTDET_ROW_KERNELS_NS::store_half};
}

}  // namespace fastdet
