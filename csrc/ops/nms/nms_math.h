// IoU test shared by the CPU and CUDA NMS (torchvision semantics).
#pragma once

#include "common/host_device.h"

namespace fastdet {

FASTDET_HOST_DEVICE float box_area(float x1, float y1, float x2, float y2) {
  return (x2 - x1) * (y2 - y1);
}

// True when IoU(a, b) > threshold. A zero-area pair gives 0/0 = NaN, which compares false:
// zero-area boxes have IoU 0 and never suppress or get suppressed.
FASTDET_HOST_DEVICE bool iou_above(float ax1, float ay1, float ax2, float ay2, float area_a,
                                   float bx1, float by1, float bx2, float by2, float area_b,
                                   float threshold) {
  const float w = (ax2 < bx2 ? ax2 : bx2) - (ax1 > bx1 ? ax1 : bx1);
  const float h = (ay2 < by2 ? ay2 : by2) - (ay1 > by1 ? ay1 : by1);
  const float inter = (w > 0.f ? w : 0.f) * (h > 0.f ? h : 0.f);
  return inter / (area_a + area_b - inter) > threshold;
}

// DAMO-YOLO's NMS is torchvision's batched_nms. Up to this many candidates it shifts every box by
// class * (largest coordinate + 1), in float32, and runs one NMS over the shifted boxes (its
// "coordinate trick"; the float32 shift rounds IoUs differently from a per-class NMS, so
// borderline suppressions depend on it); above it, one exact NMS per class. torchvision's limit
// is boxes.numel() > 20000 on CUDA and > 4000 on the CPU: fastdet follows the CUDA one, where the
// published mAPs were measured.
constexpr long long kBatchedNmsCoordinateTrickLimit = 5000;

// The class offset batched_nms uses for `count` candidates whose largest coordinate is
// `max_coordinate`; 0 (per-class NMS) above the limit.
FASTDET_HOST_DEVICE float batched_nms_class_offset(float max_coordinate, long long count) {
  return count <= kBatchedNmsCoordinateTrickLimit ? max_coordinate + 1.f : 0.f;
}

}  // namespace fastdet
