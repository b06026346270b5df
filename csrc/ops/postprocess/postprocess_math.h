// Per-element decoding shared by the CPU and CUDA postprocess (docs/facts.md sections 3 and 4).
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace fastdet {

FASTDET_HOST_DEVICE float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// YOLOv7 xywh2xyxy: centre and size to corners.
FASTDET_HOST_DEVICE void center_size_to_corners(float cx, float cy, float w, float h, float* box) {
  box[0] = cx - w / 2.f;
  box[1] = cy - h / 2.f;
  box[2] = cx + w / 2.f;
  box[3] = cy + h / 2.f;
}

// YOLOv7 Detect head, one cell of a raw [B, 3, ny, nx, 5+C] logit map (no --grid export):
// s = sigmoid(v); xy = (2 s - 0.5 + cell) * stride; wh = (2 s)^2 * anchor.
FASTDET_HOST_DEVICE void decode_yolov7_raw_box(const float* logits, float cell_x, float cell_y,
                                               float stride, float anchor_w, float anchor_h,
                                               float* center_size) {
  const float sx = sigmoid(logits[0]), sy = sigmoid(logits[1]);
  const float sw = sigmoid(logits[2]) * 2.f, sh = sigmoid(logits[3]) * 2.f;
  center_size[0] = (sx * 2.f - 0.5f + cell_x) * stride;
  center_size[1] = (sy * 2.f - 0.5f + cell_y) * stride;
  center_size[2] = sw * sw * anchor_w;
  center_size[3] = sh * sh * anchor_h;
}

}  // namespace fastdet
