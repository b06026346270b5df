// Mapping boxes from network-input pixels back to the original image, shared by the CPU and CUDA
// postprocess and by the GPU NMS stage that writes the postprocess's mapped rows.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace fastdet {

// From network-input pixels back to the original image: (v - pad) / scale, clipped to the image
// (docs/facts.md section 4: YOLOv7 step 7, DAMO-YOLO step 4).
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
