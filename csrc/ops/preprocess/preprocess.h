// preprocess: resize + pad + channel swap + scale/mean/std + HWC->CHW in one pass per image.
//
// Contract (the Python layer computes the geometry, fastdet/transform.py, and validates input):
// - Each ImageView is an 8-bit 3-channel image with arbitrary (even negative) byte strides.
// - Each Placement says where the bilinearly resampled image lies in the output plane; everything
//   outside it is padding. Resampling follows OpenCV INTER_LINEAR: half-pixel centres, source
//   coordinate (dst + 0.5) * src/dst - 0.5, clamped to the edge.
// - Output channel c takes input channel source_channel[c]; value = input * mul[c] + add[c];
//   padding = pad[c]. The output is a C-contiguous (N, 3, H, W) float32 or float16 array.
// - Both implementations blend the two source rows first, then the two columns, in float32
//   (linear_tap below gives both the same taps); float16 rounds to nearest even.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "common/host_device.h"
#if defined(FASTDET_WITH_CUDA)
#include "runtime/cuda_buffer.h"
#endif

namespace fastdet {

struct ImageView {
  const uint8_t* data;  // address of pixel (0, 0), channel 0
  int64_t height;
  int64_t width;
  int64_t row_stride;  // bytes
  int64_t pixel_stride;
  int64_t channel_stride;
};

struct Placement {
  int64_t resized_height;
  int64_t resized_width;
  int64_t top;
  int64_t left;
};

struct PixelMap {
  int source_channel[3];
  float mul[3];
  float add[3];
  float pad[3];
};

enum class OutputType { Float32, Float16 };

struct OutputPlanes {
  void* data;  // (N, 3, height, width), C-contiguous
  int64_t height;
  int64_t width;
  OutputType type;
};

// One bilinear tap pair along an axis, exactly as OpenCV INTER_LINEAR computes it.
struct LinearTap {
  int64_t first;
  int64_t second;
  float weight_second;
};

FASTDET_HOST_DEVICE LinearTap linear_tap(int64_t dst_index, double src_per_dst, int64_t src_size) {
  const float position = static_cast<float>((dst_index + 0.5) * src_per_dst - 0.5);
  int64_t first = static_cast<int64_t>(position);
  if (static_cast<float>(first) > position) --first;  // floor
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

// Throws ValueError unless every image is non-empty and every placement fits the output.
void check_preprocess_arguments(const std::vector<ImageView>& images,
                                const std::vector<Placement>& placements, const OutputPlanes& out);

void preprocess_cpu(const std::vector<ImageView>& images, const std::vector<Placement>& placements,
                    const PixelMap& pixel_map, const OutputPlanes& out);

#if defined(FASTDET_WITH_CUDA)
// The CUDA preprocess: one kernel launch per 32 images of any sizes, each thread writing 4
// adjacent output pixels of all 3 planes. `out.data` is device memory (an engine's input
// binding, for instance); the images are device memory, or host memory when images_on_host
// (uploaded through pinned staging first). Queued on `stream` without host synchronisation.
class PreprocessCuda {
 public:
  void run(const std::vector<ImageView>& images, bool images_on_host,
           const std::vector<Placement>& placements, const PixelMap& pixel_map,
           const OutputPlanes& out, StreamHandle stream);

 private:
  std::mutex mutex_;
  HostUploader uploader_;
};
#endif

// Which row loops preprocess_cpu runs on this CPU: "avx2" or "baseline".
const char* preprocess_cpu_kernels_name();

}  // namespace fastdet
