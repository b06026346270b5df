#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/half.h"
#include "common/thread_pool.h"
#include "ops/preprocess/opencv_rows.h"
#include "ops/preprocess/preprocess.h"

#define FASTDET_ROW_KERNELS_NS baseline
#define FASTDET_ROW_KERNELS_GETTER preprocess_row_kernels_baseline
#include "ops/preprocess/preprocess_row_kernels_impl.h"
#undef FASTDET_ROW_KERNELS_NS
#undef FASTDET_ROW_KERNELS_GETTER

namespace fastdet {
namespace {

constexpr int kChannels = 3;
// The horizontal pass loads 4 floats per pixel: the last pixel reads one float past the row.
constexpr int64_t kRowSlack = 4;

bool cpu_has_avx2_kernels() {
#if defined(FASTDET_HAVE_AVX2_KERNELS)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

// The resampling taps of one image, computed once before its rows are processed in parallel.
struct ImagePlan {
  ImageView image;
  Placement placement;
  Resample resample;
  OpenCVLinearPlan opencv;  // Resample::OpenCV
  // Resample::Float
  std::vector<int32_t> x_first;  // element offsets into an interleaved row (pixel * 3)
  std::vector<int32_t> x_second;
  std::vector<float> x_weight;
  std::vector<LinearTap> y_taps;
  bool rows_are_packed;  // pixels and channels adjacent: rows can be read in place
  bool x_point_sample;   // every horizontal weight is 0
};

ImagePlan make_plan(const ImageView& image, const Placement& placement, Resample resample) {
  ImagePlan plan{image, placement, resample, {}, {}, {}, {}, {}, false, false};
  if (resample == Resample::OpenCV) {
    plan.opencv = make_opencv_linear_plan(image, placement.resized_height, placement.resized_width);
    return plan;
  }
  plan.rows_are_packed = image.pixel_stride == kChannels && image.channel_stride == 1;
  // OpenCV derives the step as 1 / (dst / src) in double precision; so do we.
  const double x_step = 1.0 / (static_cast<double>(placement.resized_width) / image.width);
  const double y_step = 1.0 / (static_cast<double>(placement.resized_height) / image.height);
  plan.x_first.resize(placement.resized_width);
  plan.x_second.resize(placement.resized_width);
  plan.x_weight.resize(placement.resized_width);
  for (int64_t x = 0; x < placement.resized_width; ++x) {
    const LinearTap tap = linear_tap(x, x_step, image.width);
    plan.x_first[x] = static_cast<int32_t>(tap.first * kChannels);
    plan.x_second[x] = static_cast<int32_t>(tap.second * kChannels);
    plan.x_weight[x] = tap.weight_second;
  }
  plan.x_point_sample =
      std::all_of(plan.x_weight.begin(), plan.x_weight.end(), [](float w) { return w == 0.f; });
  plan.y_taps.resize(placement.resized_height);
  for (int64_t y = 0; y < placement.resized_height; ++y) {
    plan.y_taps[y] = linear_tap(y, y_step, image.height);
  }
  return plan;
}

// Per-thread scratch rows, reused across the rows of a chunk.
struct RowScratch {
  std::vector<float> blended;
  std::vector<float> channel;
  std::vector<uint8_t> packed_a;
  std::vector<uint8_t> packed_b;
  std::vector<uint8_t> levels;  // Resample::OpenCV: the resized row, 8-bit interleaved
  RowCopies copies;
};

template <typename T>
void fill(T* begin, int64_t count, T value) {
  std::fill(begin, begin + count, value);
}

void resample_float_row(const ImagePlan& plan, const PixelMap& map, int64_t dy, RowScratch& scratch,
                        float* const* resampled) {
  const PreprocessRowKernels& kernels = preprocess_row_kernels();
  const ImageView& image = plan.image;
  const Placement& place = plan.placement;
  const LinearTap tap = plan.y_taps[dy];
  const uint8_t* row_a = image.data + tap.first * image.row_stride;
  const uint8_t* row_b = image.data + tap.second * image.row_stride;
  if (!plan.rows_are_packed) {
    row_a = packed_row(image, tap.first, scratch.packed_a);
    row_b = packed_row(image, tap.second, scratch.packed_b);
  }
  const int64_t row_values = image.width * kChannels;
  scratch.blended.resize(row_values + kRowSlack, 0.f);
  kernels.blend_rows(row_a, row_b, 1.f - tap.weight_second, tap.weight_second,
                     scratch.blended.data(), row_values);
  kernels.resample_row(scratch.blended.data(), plan.x_first.data(), plan.x_second.data(),
                       plan.x_weight.data(), place.resized_width, plan.x_point_sample,
                       map.source_channel, map.mul, map.add, resampled);
}

template <typename Out>
void process_row(const ImagePlan& plan, const PixelMap& map, const float* levels,
                 const Out pad[kChannels], Out* const planes[kChannels], int64_t out_width,
                 int64_t y, RowScratch& scratch) {
  const Placement& place = plan.placement;
  const int64_t dy = y - place.top;
  if (dy < 0 || dy >= place.resized_height) {
    for (int c = 0; c < kChannels; ++c) fill(planes[c], out_width, pad[c]);
    return;
  }
  const PreprocessRowKernels& kernels = preprocess_row_kernels();
  const int64_t right = out_width - place.left - place.resized_width;
  for (int c = 0; c < kChannels; ++c) {
    fill(planes[c], place.left, pad[c]);
    fill(planes[c] + place.left + place.resized_width, right, pad[c]);
  }
  float* resampled[kChannels];
  if constexpr (std::is_same_v<Out, float>) {
    for (int c = 0; c < kChannels; ++c) resampled[c] = planes[c] + place.left;
  } else {
    scratch.channel.resize(place.resized_width * kChannels);
    for (int c = 0; c < kChannels; ++c) {
      resampled[c] = scratch.channel.data() + c * place.resized_width;
    }
  }
  const ImageView& image = plan.image;
  if (plan.resample == Resample::OpenCV) {
    scratch.levels.resize(place.resized_width * kChannels);
    opencv_linear_row(plan.opencv, image, dy, scratch.copies, scratch.levels.data());
    kernels.map_levels(scratch.levels.data(), place.resized_width, map.source_channel, levels,
                       resampled);
  } else {
    resample_float_row(plan, map, dy, scratch, resampled);
  }
  if constexpr (!std::is_same_v<Out, float>) {
    for (int c = 0; c < kChannels; ++c) {
      kernels.store_half(resampled[c], planes[c] + place.left, place.resized_width);
    }
  }
}

template <typename Out>
void run_rows(const std::vector<ImagePlan>& plans, const PixelMap& map, const Out pad[kChannels],
              Out* out, int64_t height, int64_t width) {
  // Resample::OpenCV: the output value of each 8-bit level, per output channel.
  float levels[kChannels * 256];
  for (int c = 0; c < kChannels; ++c) {
    for (int v = 0; v < 256; ++v) {
      levels[256 * c + v] = level_value(v, map.scale, map.mean[c], map.std[c]);
    }
  }
  const int64_t total_rows = static_cast<int64_t>(plans.size()) * height;
  const int64_t plane_size = height * width;
  parallel_for(total_rows, 8, [&](int64_t begin, int64_t end) {
    RowScratch scratch;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / height;
      const int64_t y = row % height;
      Out* const planes[kChannels] = {
          out + (image * kChannels + 0) * plane_size + y * width,
          out + (image * kChannels + 1) * plane_size + y * width,
          out + (image * kChannels + 2) * plane_size + y * width,
      };
      process_row(plans[image], map, levels, pad, planes, width, y, scratch);
    }
  });
}

}  // namespace

// FASTDET_CPU_KERNELS=baseline forces the portable loops (tests run both variants).
const PreprocessRowKernels& preprocess_row_kernels() {
  static const PreprocessRowKernels kernels = [] {
    const char* requested = std::getenv("FASTDET_CPU_KERNELS");
    const bool force_baseline = requested && std::strcmp(requested, "baseline") == 0;
    return (!force_baseline && cpu_has_avx2_kernels()) ? preprocess_row_kernels_avx2()
                                                       : preprocess_row_kernels_baseline();
  }();
  return kernels;
}

const char* preprocess_cpu_kernels_name() {
  return preprocess_row_kernels().blend_rows == preprocess_row_kernels_baseline().blend_rows
             ? "baseline"
             : "avx2";
}

void check_preprocess_arguments(const std::vector<ImageView>& images,
                                const std::vector<Placement>& placements, const OutputPlanes& out) {
  FASTDET_CHECK(images.size() == placements.size(), "preprocess: ", images.size(), " images but ",
                placements.size(), " placements");
  for (size_t i = 0; i < images.size(); ++i) {
    const ImageView& image = images[i];
    const Placement& place = placements[i];
    FASTDET_CHECK(image.height > 0 && image.width > 0, "preprocess: images[", i, "] is empty (",
                  image.height, "x", image.width, ")");
    FASTDET_CHECK(place.resized_height > 0 && place.resized_width > 0 && place.top >= 0 &&
                      place.left >= 0 && place.top + place.resized_height <= out.height &&
                      place.left + place.resized_width <= out.width,
                  "preprocess: placement of images[", i, "] (", place.resized_height, "x",
                  place.resized_width, " at ", place.top, ",", place.left,
                  ") does not fit the output ", out.height, "x", out.width);
  }
}

void preprocess_cpu(const std::vector<ImageView>& images, const std::vector<Placement>& placements,
                    const PixelMap& pixel_map, Resample resample, const OutputPlanes& out) {
  check_preprocess_arguments(images, placements, out);
  std::vector<ImagePlan> plans;
  plans.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    plans.push_back(make_plan(images[i], placements[i], resample));
  }
  if (out.type == OutputType::Float32) {
    run_rows(plans, pixel_map, pixel_map.pad, static_cast<float*>(out.data), out.height, out.width);
  } else {
    const uint16_t pad[kChannels] = {float_to_half_bits(pixel_map.pad[0]),
                                     float_to_half_bits(pixel_map.pad[1]),
                                     float_to_half_bits(pixel_map.pad[2])};
    run_rows(plans, pixel_map, pad, static_cast<uint16_t*>(out.data), out.height, out.width);
  }
}

}  // namespace fastdet
