// nms: greedy non-maximum suppression with torchvision semantics.
//
// Boxes are visited by score descending (ties: lower index first); a box is dropped when its IoU
// with an already kept box of the same class is strictly greater than iou_threshold, IoU and
// threshold compared in float32 as torchvision's CUDA kernel does (see nms_math.h for zero-area
// boxes). Boxes of different classes never suppress each other.
#pragma once

#include <cstdint>
#include <vector>

namespace fastdet {

struct NmsOptions {
  float iou_threshold = 0.5f;
  int64_t max_det = -1;         // keep at most this many (-1: all)
  int64_t max_candidates = -1;  // consider only this many highest-scoring boxes (-1: all)
  // > 0: IoU is computed on boxes shifted by class * class_offset in float32, reproducing
  // YOLOv7's class-offset trick (max_wh) to the rounding, including its cross-class suppression
  // when boxes span more than the offset; 0: exact per-class boxes.
  float class_offset = 0.f;
};

// boxes: n x 4 (x1, y1, x2, y2), scores: n, classes: n or nullptr (one class); all finite.
// Returns the kept indices, score-descending.
std::vector<int64_t> nms_cpu(const float* boxes, const float* scores, const int32_t* classes,
                             int64_t n, const NmsOptions& options);

}  // namespace fastdet
