#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/check.h"
#include "common/cuda_check.h"
#include "ops/preprocess/preprocess.h"

namespace fastdet {
namespace {

constexpr int kImagesPerLaunch = 32;  // image descriptors travel as kernel arguments (2.8 KB)
constexpr int kPixelsPerThread = 4;
constexpr int kBlockX = 32;
constexpr int kBlockY = 8;

struct GpuImage {
  const uint8_t* data;
  int64_t row_stride;
  int64_t pixel_stride;
  int64_t channel_stride;
  int64_t height;
  int64_t width;
  int32_t resized_height;
  int32_t resized_width;
  int32_t top;
  int32_t left;
  double x_step;  // source pixels per output pixel, as OpenCV derives them
  double y_step;
  bool halves;  // Resample::OpenCV on an exact 2x downscale: OpenCV's 2x2 mean
};

struct GpuImages {
  GpuImage image[kImagesPerLaunch];
};

template <typename Out>
__device__ __forceinline__ void store4(Out* dst, const float (&v)[kPixelsPerThread], int count,
                                       bool vector_store);

template <>
__device__ __forceinline__ void store4<float>(float* dst, const float (&v)[kPixelsPerThread],
                                              int count, bool vector_store) {
  if (vector_store) {
    *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    return;
  }
  for (int i = 0; i < count; ++i) dst[i] = v[i];
}

template <>
__device__ __forceinline__ void store4<__half>(__half* dst, const float (&v)[kPixelsPerThread],
                                               int count, bool vector_store) {
  if (vector_store) {
    const __half2 lo = __halves2half2(__float2half_rn(v[0]), __float2half_rn(v[1]));
    const __half2 hi = __halves2half2(__float2half_rn(v[2]), __float2half_rn(v[3]));
    uint2 packed;
    packed.x = *reinterpret_cast<const uint32_t*>(&lo);
    packed.y = *reinterpret_cast<const uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(dst) = packed;
    return;
  }
  for (int i = 0; i < count; ++i) dst[i] = __float2half_rn(v[i]);
}

static_assert(kBlockX * kBlockY == 256, "one thread per 8-bit level fills the level table");

// Resample::OpenCV, the 8-bit level of channel k of output pixel (dx, dy) of image `im`: what
// cv2.resize(INTER_LINEAR) gives there (preprocess_math.h).
__device__ __forceinline__ int opencv_level(const GpuImage& im, const FixedTap& ty, int64_t dx,
                                            int64_t dy, int64_t k) {
  if (im.halves) {
    const uint8_t* a = im.data + 2 * dy * im.row_stride + 2 * dx * im.pixel_stride + k;
    const uint8_t* b = a + im.row_stride;
    return opencv_mean_2x2(__ldg(a), __ldg(a + im.pixel_stride), __ldg(b),
                           __ldg(b + im.pixel_stride));
  }
  const FixedTap tx = opencv_column_tap(dx, im.x_step, im.width);
  const uint8_t* a = im.data + ty.first * im.row_stride + k;
  const uint8_t* b = im.data + ty.second * im.row_stride + k;
  const int64_t first = tx.first * im.pixel_stride;
  const int64_t second = tx.second * im.pixel_stride;
  const int32_t ha =
      opencv_horizontal(__ldg(a + first), __ldg(a + second), tx.weight_first, tx.weight_second);
  const int32_t hb =
      opencv_horizontal(__ldg(b + first), __ldg(b + second), tx.weight_first, tx.weight_second);
  return opencv_vertical(ha, hb, ty.weight_first, ty.weight_second);
}

// One thread: 4 horizontally adjacent output pixels of one row, all three planes.
template <typename Out>
__global__ void __launch_bounds__(kBlockX* kBlockY)
    preprocess_kernel(GpuImages images, PixelMap map, bool opencv, Out* out, int64_t out_height,
                      int64_t out_width, int64_t first_image, bool vector_store) {
  // Resample::OpenCV: the output value of every level, per channel, computed by the same
  // function as the CPU's (the launch-wide `opencv` keeps the barrier uniform).
  __shared__ float levels[3][256];
  if (opencv) {
    const int level = threadIdx.y * kBlockX + threadIdx.x;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      levels[c][level] = level_value(level, map.scale, map.mean[c], map.std[c]);
    }
    __syncthreads();
  }

  const GpuImage& im = images.image[blockIdx.z];
  const int64_t y = int64_t(blockIdx.y) * kBlockY + threadIdx.y;
  const int64_t x0 = (int64_t(blockIdx.x) * kBlockX + threadIdx.x) * kPixelsPerThread;
  if (y >= out_height || x0 >= out_width) return;
  const int count = int(min(int64_t(kPixelsPerThread), out_width - x0));

  float values[3][kPixelsPerThread];
#pragma unroll
  for (int c = 0; c < 3; ++c) {
#pragma unroll
    for (int i = 0; i < kPixelsPerThread; ++i) values[c][i] = map.pad[c];
  }

  const int64_t dy = y - im.top;
  if (dy >= 0 && dy < im.resized_height && opencv) {
    const FixedTap ty = opencv_row_tap(dy, im.y_step, im.height);
#pragma unroll
    for (int i = 0; i < kPixelsPerThread; ++i) {
      const int64_t dx = x0 + i - im.left;
      if (i >= count || dx < 0 || dx >= im.resized_width) continue;
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        const int64_t k = map.source_channel[c] * im.channel_stride;
        values[c][i] = levels[c][opencv_level(im, ty, dx, dy, k)];
      }
    }
  } else if (dy >= 0 && dy < im.resized_height) {
    const LinearTap ty = linear_tap(dy, im.y_step, im.height);
    const float wb = ty.weight_second;
    const float wa = 1.f - wb;
    const uint8_t* row_a = im.data + ty.first * im.row_stride;
    const uint8_t* row_b = im.data + ty.second * im.row_stride;
#pragma unroll
    for (int i = 0; i < kPixelsPerThread; ++i) {
      const int64_t dx = x0 + i - im.left;
      if (i >= count || dx < 0 || dx >= im.resized_width) continue;
      const LinearTap tx = linear_tap(dx, im.x_step, im.width);
      const int64_t first = tx.first * im.pixel_stride;
      const int64_t second = tx.second * im.pixel_stride;
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        const int64_t k = map.source_channel[c] * im.channel_stride;
        // Rows first, then columns, as the CPU kernels blend them.
        const float a = float(__ldg(row_a + first + k)) * wa + float(__ldg(row_b + first + k)) * wb;
        const float b =
            float(__ldg(row_a + second + k)) * wa + float(__ldg(row_b + second + k)) * wb;
        values[c][i] = (a + (b - a) * tx.weight_second) * map.mul[c] + map.add[c];
      }
    }
  }

  const int64_t plane = out_height * out_width;
  Out* base = out + (first_image + blockIdx.z) * 3 * plane + y * out_width + x0;
#pragma unroll
  for (int c = 0; c < 3; ++c) store4<Out>(base + c * plane, values[c], count, vector_store);
}

template <typename Out>
void launch(const std::vector<GpuImage>& images, const PixelMap& map, bool opencv,
            const OutputPlanes& out, cudaStream_t stream) {
  Out* data = static_cast<Out*>(out.data);
  // 16-byte (float) or 8-byte (half) stores need every row start aligned.
  const bool vector_store = out.width % kPixelsPerThread == 0 &&
                            reinterpret_cast<uintptr_t>(data) % (sizeof(Out) * 4) == 0;
  const dim3 block(kBlockX, kBlockY);
  const unsigned grid_x =
      unsigned((out.width + kBlockX * kPixelsPerThread - 1) / (kBlockX * kPixelsPerThread));
  const unsigned grid_y = unsigned((out.height + kBlockY - 1) / kBlockY);
  for (size_t first = 0; first < images.size(); first += kImagesPerLaunch) {
    const size_t count = std::min<size_t>(kImagesPerLaunch, images.size() - first);
    GpuImages batch{};
    std::copy_n(images.begin() + first, count, batch.image);
    preprocess_kernel<Out><<<dim3(grid_x, grid_y, unsigned(count)), block, 0, stream>>>(
        batch, map, opencv, data, out.height, out.width, int64_t(first), vector_store);
    FASTDET_CUDA_CHECK_LAUNCH("preprocess_kernel");
  }
}

}  // namespace

void PreprocessCuda::run(const std::vector<ImageView>& images, bool images_on_host,
                         const std::vector<Placement>& placements, const PixelMap& pixel_map,
                         Resample resample, const OutputPlanes& out, StreamHandle stream) {
  check_preprocess_arguments(images, placements, out);
  FASTDET_CHECK(out.height <= INT32_MAX && out.width <= INT32_MAX,
                "preprocess: the output is too large: ", out.height, "x", out.width);
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ImageView> views = images;
  if (images_on_host) {
    std::vector<HostPiece> pieces;
    for (const ImageView& v : images) pieces.push_back(image_piece(v));
    const std::vector<void*> addresses = uploader_.upload(pieces, stream);
    for (size_t i = 0; i < views.size(); ++i) {
      views[i] = {static_cast<const uint8_t*>(addresses[i]),
                  images[i].height,
                  images[i].width,
                  images[i].width * 3,
                  3,
                  1};
    }
  }
  std::vector<GpuImage> gpu;
  for (size_t i = 0; i < views.size(); ++i) {
    const ImageView& v = views[i];
    const Placement& p = placements[i];
    gpu.push_back({v.data, v.row_stride, v.pixel_stride, v.channel_stride, v.height, v.width,
                   int32_t(p.resized_height), int32_t(p.resized_width), int32_t(p.top),
                   int32_t(p.left),
                   // OpenCV derives the step as 1 / (dst / src) in double precision, as the CPU.
                   1.0 / (static_cast<double>(p.resized_width) / v.width),
                   1.0 / (static_cast<double>(p.resized_height) / v.height),
                   opencv_halves(v.height, v.width, p.resized_height, p.resized_width)});
  }
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  const bool opencv = resample == Resample::OpenCV;
  if (out.type == OutputType::Float32) {
    launch<float>(gpu, pixel_map, opencv, out, cuda_stream);
  } else {
    launch<__half>(gpu, pixel_map, opencv, out, cuda_stream);
  }
  if (images_on_host) uploader_.consumed(stream);
}

}  // namespace fastdet
