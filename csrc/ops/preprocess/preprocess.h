// preprocess: resize + pad + channel swap + scale/mean/std + HWC->CHW in one pass per image.
//
// Contract (the Python layer computes the geometry, python/fastdet/ops/transform.py, and
// validates input):
// - Each ImageView is an 8-bit 3-channel image with arbitrary (even negative) byte strides.
// - Each Placement says where the resampled image lies in the output plane; everything outside
//   it is padding. Both resamplers put output pixel centres at source (dst + 0.5) * src/dst - 0.5
//   (half-pixel centres, OpenCV INTER_LINEAR) and clamp at the edges.
// - Resample::OpenCV (the default): the resampled pixels are exactly those of
//   cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) on the uint8 image, which is what
//   the official YOLOv7 and DAMO-YOLO pipelines feed their networks (fixed-point weights, its
//   rounding, its 2x rule: preprocess_math.h). Output channel c of a pixel of level v (0-255) of
//   input channel source_channel[c] is float32((v * scale - mean[c]) / std[c]) computed in double,
//   so with scale 1/255 it equals `image.astype(np.float32) / 255` bit for bit.
// - Resample::Float: bilinear in float32 (rows blended first, then columns), not rounded to
//   8 bits; value = sample * mul[c] + add[c] in float32.
// - Padding = pad[c]. The output is a C-contiguous (N, 3, H, W) float32 or float16 array;
//   float16 is the float32 value rounded to nearest even.
// - CPU and CUDA run the same per-element arithmetic (preprocess_math.h) and give the same bits.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "common/host_device.h"
#include "ops/preprocess/preprocess_math.h"
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

enum class Resample { OpenCV, Float };

struct PixelMap {
  int source_channel[3];
  float mul[3];  // Resample::Float
  float add[3];
  float pad[3];
  double scale;  // Resample::OpenCV: (level * scale - mean[c]) / std[c]
  double mean[3];
  double std[3];
};

enum class OutputType { Float32, Float16 };

struct OutputPlanes {
  void* data;  // (N, 3, height, width), C-contiguous
  int64_t height;
  int64_t width;
  OutputType type;
};

// Throws ValueError unless every image is non-empty and every placement fits the output.
void check_preprocess_arguments(const std::vector<ImageView>& images,
                                const std::vector<Placement>& placements, const OutputPlanes& out);

void preprocess_cpu(const std::vector<ImageView>& images, const std::vector<Placement>& placements,
                    const PixelMap& pixel_map, Resample resample, const OutputPlanes& out);

// The resampling alone, to a uint8 image (fastdet.resize): `out` is a C-contiguous
// (out_height, out_width, 3) uint8 array. ResizeMode::Linear is Resample::OpenCV's resampler, i.e.
// cv2.resize(..., INTER_LINEAR) bit for bit; ResizeMode::Area is cv2.resize(..., INTER_AREA)
// bit for bit on a reduction of both sides (YOLOv7 test.py loads its images so): integer factors
// sum their blocks (2x2: (sum + 2) >> 2; else the sum times float32 1/area, rounded to even),
// other factors accumulate OpenCV's float32 area weights in its order. Area throws unless
// neither side grows.
enum class ResizeMode { Linear, Area };
void resize_cpu(const ImageView& image, uint8_t* out, int64_t out_height, int64_t out_width,
                ResizeMode mode);

#if defined(FASTDET_WITH_CUDA)
// A host image as HostUploader takes it; it arrives C-contiguous (H, W, 3) in device memory.
inline HostPiece image_piece(const ImageView& v) {
  return {v.data, {v.height, v.width, 3}, {v.row_stride, v.pixel_stride, v.channel_stride}, 1};
}

// The CUDA preprocess: one kernel launch per 32 images of any sizes, each thread writing 4
// adjacent output pixels of all 3 planes. `out.data` is device memory (an engine's input
// binding, for instance); the images are device memory, or host memory when images_on_host
// (uploaded through pinned staging first). Queued on `stream` without host synchronisation.
class PreprocessCuda {
 public:
  void run(const std::vector<ImageView>& images, bool images_on_host,
           const std::vector<Placement>& placements, const PixelMap& pixel_map, Resample resample,
           const OutputPlanes& out, StreamHandle stream);

 private:
  std::mutex mutex_;
  HostUploader uploader_;
};
#endif

// Which row loops preprocess_cpu runs on this CPU: "avx2" or "baseline".
const char* preprocess_cpu_kernels_name();

}  // namespace fastdet
