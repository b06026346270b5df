// postprocess: decode + candidate selection + per-class NMS + mapping back + clip, per image,
// exactly as each family's official postprocessing (docs/facts.md section 4).
//
// - YOLOv7 (grid [B,N,5+C] or raw per-level logit maps): a row is a candidate only when
//   objectness > conf; score = obj * cls; multi-label keeps every class with score > conf, else
//   only the first best class if > conf (the class filter applies after that choice); the
//   max_candidates highest go to NMS with the class-offset trick (kYoloV7ClassOffset).
// - DAMO-YOLO (scores [B,N,C], boxes [B,N,4] x1y1x2y2): every (box, class) with score > conf
//   (multi-label; single-label keeps the best class), torchvision's batched_nms: its float32
//   coordinate trick up to kBatchedNmsCoordinateTrickLimit candidates, per-class NMS above.
// - end2end (NMS done by the engine): rows below num_dets with score > conf, no NMS.
// All: at most max_det kept, score-descending; boxes mapped back through BoxTransform and clipped.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common/box_transform.h"
#if defined(FASTDET_WITH_CUDA)
#include "runtime/cuda_buffer.h"
#include "runtime/cuda_stream.h"
#endif

namespace fastdet {

// YOLOv7's max_wh: boxes are shifted by class * 4096 before its class-agnostic NMS.
constexpr float kYoloV7ClassOffset = 4096.f;

struct PostprocessOptions {
  float conf = 0.25f;
  float iou = 0.45f;
  bool multi_label = false;
  int64_t max_det = 300;
  int64_t max_candidates = 30000;  // -1: no cap
  std::vector<int32_t> classes;    // empty: all classes
  bool agnostic = false;
};

struct DetectionList {
  std::vector<float> boxes;  // n x 4, x1 y1 x2 y2 in original pixels
  std::vector<float> scores;
  std::vector<int32_t> classes;
};

// All arrays are float32 (int32 where named), C-contiguous, batch-major.
struct YoloV7GridOutput {
  const float* data;  // [batch, rows, 5 + C]
  int64_t rows;
  int64_t channels;
};

struct YoloV7RawLevel {
  const float* data;  // [batch, anchors, ny, nx, 5 + C] logits
  int64_t anchors;
  int64_t ny, nx;
  int64_t channels;
  float stride;
  std::vector<float> anchor_sizes;  // anchors x (w, h) in input pixels
};

struct DamoOutput {
  const float* scores;  // [batch, rows, C]
  const float* boxes;   // [batch, rows, 4]
  int64_t rows;
  int64_t classes;
};

struct End2EndOutput {
  const int32_t* num_dets;  // [batch]
  const float* boxes;       // [batch, k, 4]
  const float* scores;      // [batch, k]
  const int32_t* classes;   // [batch, k]
  int64_t k;
};

// One entry per image of the batch (transforms.size() images).
std::vector<DetectionList> postprocess_yolov7_cpu(const YoloV7GridOutput& output,
                                                  const std::vector<BoxTransform>& transforms,
                                                  const PostprocessOptions& options);
std::vector<DetectionList> postprocess_yolov7_raw_cpu(const std::vector<YoloV7RawLevel>& levels,
                                                      const std::vector<BoxTransform>& transforms,
                                                      const PostprocessOptions& options);
std::vector<DetectionList> postprocess_damo_cpu(const DamoOutput& output,
                                                const std::vector<BoxTransform>& transforms,
                                                const PostprocessOptions& options);
std::vector<DetectionList> postprocess_end2end_cpu(const End2EndOutput& output,
                                                   const std::vector<BoxTransform>& transforms,
                                                   const PostprocessOptions& options);

// Maps n boxes (n x 4, in place) from network-input pixels to the original image.
void boxes_to_original_cpu(float* boxes, int64_t n, const BoxTransform& transform);

#if defined(FASTDET_WITH_CUDA)
enum class CudaOutputFormat { YoloV7, YoloV7Raw, Damo };

// One engine output: float32 or float16 (half), in device memory or, when the input is on_host,
// C-contiguous host memory. Strides in elements.
struct CudaTensor {
  const void* data;
  bool half;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
};

struct PostprocessCudaInput {
  CudaOutputFormat format;
  // yolov7: [output]; yolov7-raw: the levels, P3 first; damo: [scores, boxes].
  std::vector<CudaTensor> tensors;
  std::vector<float> strides;               // yolov7-raw: per level
  std::vector<std::vector<float>> anchors;  // yolov7-raw: per level, (w, h) pairs
  bool on_host = false;
};

// The CUDA postprocess with its workspace, same contract and results as the CPU functions above
// for the yolov7, yolov7-raw and damo formats.
//
// enqueue() queues decode + candidate selection + NMS + mapping back + clipping and the copy of a
// compact result (per image: the count, then up to max_det rows of x1 y1 x2 y2 score class) into
// pinned memory, all on `stream`, without host synchronisation. The workspace is sized by the
// first call of a shape and grows only when a bigger one arrives, so repeated calls allocate
// nothing and a CUDA graph can capture a call (after one eager call of the same shapes). The
// thresholds, transforms and class filter are per-call values that the kernels read from device
// memory, uploaded inside the call from a pinned block: set_call_values() rewrites that block for
// the next replay of a captured call.
class PostprocessCuda {
 public:
  PostprocessCuda();
  ~PostprocessCuda();
  void enqueue(const PostprocessCudaInput& input, const std::vector<BoxTransform>& transforms,
               const PostprocessOptions& options, StreamHandle stream);
  // The values a replay of the last enqueue will use; only when no run of it is in flight.
  void set_call_values(const std::vector<BoxTransform>& transforms, float conf, float iou,
                       const std::vector<int32_t>& classes);
  // An event recorded between NMS and the copy of the result to the host, in every later
  // enqueue (and so in a graph captured from one), for timing the download; null: none.
  void set_download_marker(TimingEvent* event) { download_marker_ = event; }
  // After the stream of the last run is synchronised: its detections, one list per image.
  // Throws ValueError, as the CPU functions do, when a candidate was not finite.
  std::vector<DetectionList> results();
  // The last run's compact result on the device: counts [batch] int32, rows
  // [batch][max_det][6] float32 (valid until the next enqueue).
  const int32_t* device_counts() const;
  const float* device_rows() const;
  int64_t batch() const;
  int64_t max_det() const;
  std::mutex& mutex() { return mutex_; }

  struct Workspace;

 private:
  std::mutex mutex_;
  std::unique_ptr<Workspace> workspace_;
  TimingEvent* download_marker_ = nullptr;
};
#endif

}  // namespace fastdet
