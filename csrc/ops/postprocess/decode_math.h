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

// From network-input pixels back to the original image: (v - pad) / scale, clipped to the image.
// An infinite width or height leaves that axis unclipped: DAMO-YOLO's evaluation maps its boxes
// without clipping, so fastdet's official protocol takes them out in network-input pixels as
// they are (scale 1, pad 0: the mapping is then exact) and maps them its own way.
struct BoxTransform {
  float scale_x, scale_y;
  float pad_x, pad_y;
  float width, height;  // the original image size (infinity: not clipped)
};

FASTDET_HOST_DEVICE float clamp_to(float v, float high) {
  if (high == INFINITY) return v;
  return v < 0.f ? 0.f : (v > high ? high : v);
}

FASTDET_HOST_DEVICE void box_to_original(const BoxTransform& t, float* box) {
  box[0] = clamp_to((box[0] - t.pad_x) / t.scale_x, t.width);
  box[1] = clamp_to((box[1] - t.pad_y) / t.scale_y, t.height);
  box[2] = clamp_to((box[2] - t.pad_x) / t.scale_x, t.width);
  box[3] = clamp_to((box[3] - t.pad_y) / t.scale_y, t.height);
}

}  // namespace fastdet
