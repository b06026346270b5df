#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/thread_pool.h"
#include "ops/preprocess/opencv_rows.h"
#include "ops/preprocess/preprocess.h"
#include "ops/preprocess/preprocess_math.h"
#include "ops/preprocess/preprocess_row_kernels.h"

namespace fastdet {
namespace {

constexpr int kChannels = 3;

}  // namespace

const uint8_t* packed_row(const ImageView& image, int64_t y, std::vector<uint8_t>& buffer) {
  const uint8_t* row = image.data + y * image.row_stride;
  buffer.resize((image.width + 1) * kChannels);
  if (image.pixel_stride == kChannels && image.channel_stride == 1) {
    std::memcpy(buffer.data(), row, image.width * kChannels);
  } else {
    for (int64_t x = 0; x < image.width; ++x) {
      for (int c = 0; c < kChannels; ++c) {
        buffer[x * kChannels + c] = row[x * image.pixel_stride + c * image.channel_stride];
      }
    }
  }
  std::memcpy(buffer.data() + image.width * kChannels,
              buffer.data() + (image.width - 1) * kChannels, kChannels);
  return buffer.data();
}

OpenCVLinearPlan make_opencv_linear_plan(const ImageView& image, int64_t dst_height,
                                         int64_t dst_width) {
  OpenCVLinearPlan plan;
  plan.dst_width = dst_width;
  plan.halves = opencv_halves(image.height, image.width, dst_height, dst_width);
  plan.rows_are_packed =
      image.pixel_stride == kChannels && image.channel_stride == 1 && image.width >= 2;
  if (plan.halves) return plan;
  // OpenCV derives the step as 1 / (dst / src) in double precision; so do we.
  const double x_step = 1.0 / (static_cast<double>(dst_width) / image.width);
  const double y_step = 1.0 / (static_cast<double>(dst_height) / image.height);
  const int64_t row_bytes = image.width * kChannels;
  plan.offset.resize(dst_width);
  plan.weights.assign(dst_width * 8, 0);
  plan.whole.resize(dst_width);
  plan.whole_columns = true;
  for (int64_t x = 0; x < dst_width; ++x) {
    FixedTap tap = opencv_column_tap(x, x_step, image.width);
    if (tap.first == image.width - 1 && image.width >= 2) {
      // The last pixel alone, read as the right tap of the pair before it: the kernels always
      // read a pixel and its right neighbour.
      tap = {image.width - 2, image.width - 1, 0, tap.weight_first};
    }
    plan.offset[x] = static_cast<int32_t>(tap.first * kChannels);
    for (int k = 0; k < kChannels; ++k) {
      plan.weights[8 * x + 2 * k] = static_cast<int16_t>(tap.weight_first);
      plan.weights[8 * x + 2 * k + 1] = static_cast<int16_t>(tap.weight_second);
    }
    if (plan.offset[x] + 16 <= row_bytes) plan.vector_end = x + 1;
    plan.whole[x] = plan.offset[x] + (tap.weight_first == kFixedPointOne ? 0 : kChannels);
    plan.whole_columns = plan.whole_columns && (tap.weight_first == kFixedPointOne ||
                                                tap.weight_second == kFixedPointOne);
  }
  plan.rows.resize(dst_height);
  for (int64_t y = 0; y < dst_height; ++y) plan.rows[y] = opencv_row_tap(y, y_step, image.height);
  return plan;
}

void opencv_linear_row(const OpenCVLinearPlan& plan, const ImageView& image, int64_t y,
                       RowCopies& copies, uint8_t* out) {
  const PreprocessRowKernels& kernels = preprocess_row_kernels();
  if (plan.halves) {
    const uint8_t* a = image.data + 2 * y * image.row_stride;
    const uint8_t* b = a + image.row_stride;
    if (!plan.rows_are_packed) {
      a = packed_row(image, 2 * y, copies.a);
      b = packed_row(image, 2 * y + 1, copies.b);
    }
    kernels.opencv_halve_row(a, b, plan.dst_width, out);
    return;
  }
  const FixedTap& tap = plan.rows[y];
  // A row of weight 0 adds exactly nothing: the first one is read for it (less memory traffic).
  const int64_t second = tap.weight_second == 0 ? tap.first : tap.second;
  const uint8_t* a = image.data + tap.first * image.row_stride;
  const uint8_t* b = image.data + second * image.row_stride;
  if (!plan.rows_are_packed) {
    a = packed_row(image, tap.first, copies.a);
    b = second == tap.first ? a : packed_row(image, second, copies.b);
  }
  if (plan.whole_columns && tap.weight_first == kFixedPointOne) {
    // One pixel of one row at weight 2048 x 2048: the vertical step gives the pixel back
    // (((p * 2048) >> 4) * 2048 >> 16 = 4p, then (4p + 2) >> 2 = p).
    for (int64_t x = 0; x < plan.dst_width; ++x) {
      std::memcpy(out + kChannels * x, a + plan.whole[x], kChannels);
    }
    return;
  }
  kernels.opencv_linear_row(a, b, plan.offset.data(), plan.weights.data(), plan.vector_end,
                            plan.dst_width, tap.weight_first, tap.weight_second, out);
}

namespace {

// OpenCV's INTER_AREA for a reduction by integer factors: each output pixel the sum of its
// block, rounded by (sum + 2) >> 2 for 2x2 and as float32 sum * (1 / area), ties to even,
// otherwise (established against cv2 5.0.0 and 4.14.0).
void area_integer(const ImageView& image, uint8_t* out, int64_t out_height, int64_t out_width,
                  int64_t fx, int64_t fy) {
  const float inverse_area = 1.f / static_cast<float>(fx * fy);
  const bool two_by_two = fx == 2 && fy == 2;
  const bool packed = image.pixel_stride == kChannels && image.channel_stride == 1;
  const int64_t row_values = image.width * kChannels;
  parallel_for(out_height, 4, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> columns(row_values);  // the block's rows summed per source value
    const int64_t out_values = out_width * kChannels;
    std::vector<int32_t> sums(out_values);
    std::vector<uint8_t> copy;
    for (int64_t y = begin; y < end; ++y) {
      std::fill(columns.begin(), columns.end(), 0);
      for (int64_t r = 0; r < fy; ++r) {
        const int64_t source_row = y * fy + r;
        const uint8_t* row = packed ? image.data + source_row * image.row_stride
                                    : packed_row(image, source_row, copy);
        for (int64_t i = 0; i < row_values; ++i) columns[i] += row[i];
      }
      for (int64_t x = 0; x < out_width; ++x) {
        for (int c = 0; c < kChannels; ++c) {
          int32_t sum = 0;
          for (int64_t s = 0; s < fx; ++s) sum += columns[(x * fx + s) * kChannels + c];
          sums[x * kChannels + c] = sum;
        }
      }
      uint8_t* dst = out + y * out_width * kChannels;
      if (two_by_two) {
        for (int64_t i = 0; i < out_values; ++i) dst[i] = static_cast<uint8_t>((sums[i] + 2) >> 2);
      } else {
        for (int64_t i = 0; i < out_values; ++i) {
          const int32_t value = round_half_even(static_cast<float>(sums[i]) * inverse_area);
          dst[i] = static_cast<uint8_t>(std::clamp(value, 0, 255));
        }
      }
    }
  });
}

// One source index's share of one output index (OpenCV's area tables).
struct AreaWeight {
  int64_t dst;
  int64_t src;
  float weight;
};

// The weights along one axis, in OpenCV's order: per output index, a partial first source pixel,
// the whole ones, a partial last one; all of double arithmetic rounded to float.
std::vector<AreaWeight> area_weights(int64_t src_size, int64_t dst_size, double scale) {
  std::vector<AreaWeight> table;
  for (int64_t d = 0; d < dst_size; ++d) {
    const double start = static_cast<double>(d) * scale;
    const double stop = start + scale;
    const double cell = std::min(scale, static_cast<double>(src_size) - start);
    int64_t first = static_cast<int64_t>(std::ceil(start));
    int64_t last = static_cast<int64_t>(std::floor(stop));
    last = std::min(last, src_size - 1);
    first = std::min(first, last);
    // Shares under a thousandth of a pixel are dropped, as OpenCV drops them.
    if (static_cast<double>(first) - start > 1e-3) {
      table.push_back(
          {d, first - 1, static_cast<float>((static_cast<double>(first) - start) / cell)});
    }
    for (int64_t s = first; s < last; ++s) {
      table.push_back({d, s, static_cast<float>(1.0 / cell)});
    }
    if (stop - static_cast<double>(last) > 1e-3) {
      table.push_back(
          {d, last,
           static_cast<float>(std::min(std::min(stop - static_cast<double>(last), 1.0), cell) /
                              cell)});
    }
  }
  return table;
}

// OpenCV's INTER_AREA for other reductions: per output row, each contributing source row is
// first reduced along x into float32 (products added in table order), then the rows are added
// with their float32 weights; the float result is rounded to nearest, ties to even.
void area_general(const ImageView& image, uint8_t* out, int64_t out_height, int64_t out_width,
                  double x_scale, double y_scale) {
  const std::vector<AreaWeight> xs = area_weights(image.width, out_width, x_scale);
  const std::vector<AreaWeight> ys = area_weights(image.height, out_height, y_scale);
  std::vector<size_t> row_start(out_height + 1, ys.size());
  for (size_t i = ys.size(); i-- > 0;) row_start[ys[i].dst] = i;
  const bool packed = image.pixel_stride == kChannels && image.channel_stride == 1;
  parallel_for(out_height, 4, [&](int64_t begin, int64_t end) {
    const int64_t values = out_width * kChannels;
    std::vector<float> row_sum(values);
    std::vector<float> sum(values);
    std::vector<uint8_t> copy;
    for (int64_t y = begin; y < end; ++y) {
      for (size_t j = row_start[y]; j < ys.size() && ys[j].dst == y; ++j) {
        const uint8_t* row =
            packed ? image.data + ys[j].src * image.row_stride : packed_row(image, ys[j].src, copy);
        std::fill(row_sum.begin(), row_sum.end(), 0.f);
        for (const AreaWeight& w : xs) {
          const uint8_t* pixel = row + w.src * kChannels;
          float* target = row_sum.data() + w.dst * kChannels;
          for (int c = 0; c < kChannels; ++c) {
            const float product = static_cast<float>(pixel[c]) * w.weight;
            target[c] = target[c] + product;
          }
        }
        const float beta = ys[j].weight;
        if (j == row_start[y]) {
          for (int64_t i = 0; i < values; ++i) sum[i] = beta * row_sum[i];
        } else {
          for (int64_t i = 0; i < values; ++i) {
            const float product = beta * row_sum[i];
            sum[i] = sum[i] + product;
          }
        }
      }
      uint8_t* dst = out + y * values;
      for (int64_t i = 0; i < values; ++i) {
        dst[i] = static_cast<uint8_t>(std::clamp(round_half_even(sum[i]), 0, 255));
      }
    }
  });
}

// OpenCV calls a factor integral when 1 / (dst / src) is within DBL_EPSILON of an integer.
bool integral_factor(double scale, int64_t& factor) {
  factor = static_cast<int64_t>(std::nearbyint(scale));
  return std::abs(scale - static_cast<double>(factor)) < 2.220446049250313e-16;
}

}  // namespace

void resize_cpu(const ImageView& image, uint8_t* out, int64_t out_height, int64_t out_width,
                ResizeMode mode) {
  FASTDET_CHECK(image.height > 0 && image.width > 0, "resize: the image is empty (", image.height,
                "x", image.width, ")");
  FASTDET_CHECK(out_height > 0 && out_width > 0, "resize: the size is empty (", out_height, "x",
                out_width, ")");
  if (out_height == image.height && out_width == image.width) {
    // Both interpolations give the image back (OpenCV copies it too).
    parallel_for(out_height, 16, [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> copy;
      const bool packed = image.pixel_stride == kChannels && image.channel_stride == 1;
      for (int64_t y = begin; y < end; ++y) {
        const uint8_t* row =
            packed ? image.data + y * image.row_stride : packed_row(image, y, copy);
        std::memcpy(out + y * out_width * kChannels, row, out_width * kChannels);
      }
    });
    return;
  }
  // An exact 2x reduction is the same 2x2 mean for both (the linear path's vector kernel).
  if (mode == ResizeMode::Linear ||
      opencv_halves(image.height, image.width, out_height, out_width)) {
    const OpenCVLinearPlan plan = make_opencv_linear_plan(image, out_height, out_width);
    parallel_for(out_height, 4, [&](int64_t begin, int64_t end) {
      RowCopies copies;
      for (int64_t y = begin; y < end; ++y) {
        opencv_linear_row(plan, image, y, copies, out + y * out_width * kChannels);
      }
    });
    return;
  }
  FASTDET_CHECK(out_height <= image.height && out_width <= image.width,
                "resize: area resampling only reduces, got ", image.height, "x", image.width,
                " to ", out_height, "x", out_width);
  const double x_scale = 1.0 / (static_cast<double>(out_width) / image.width);
  const double y_scale = 1.0 / (static_cast<double>(out_height) / image.height);
  int64_t fx = 0;
  int64_t fy = 0;
  if (integral_factor(x_scale, fx) && integral_factor(y_scale, fy)) {
    area_integer(image, out, out_height, out_width, fx, fy);
  } else {
    area_general(image, out, out_height, out_width, x_scale, y_scale);
  }
}

}  // namespace fastdet
