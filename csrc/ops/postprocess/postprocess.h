// postprocess: decode + candidate selection + per-class NMS + mapping back + clip, per image,
// exactly as each family's official postprocessing (model-facts section 4).
//
// - YOLOv7 (grid [B,N,5+C] or raw per-level logit maps): a row is a candidate only when
//   objectness > conf; score = obj * cls; multi-label keeps every class with score > conf, else
//   only the first best class if > conf (the class filter applies after that choice); the
//   max_candidates highest go to NMS with the class-offset trick (kYoloV7ClassOffset).
// - DAMO-YOLO (scores [B,N,C], boxes [B,N,4] x1y1x2y2): every (box, class) with score > conf
//   (multi-label; single-label keeps the best class), exact per-class NMS.
// - end2end (NMS done by the engine): rows below num_dets with score > conf, no NMS.
// All: at most max_det kept, score-descending; boxes mapped back through BoxTransform and clipped.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/postprocess/decode_math.h"

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

}  // namespace fastdet
