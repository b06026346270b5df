// The preprocess arguments the CPU and CUDA faces both take from fastdet.preprocess.Plan.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>

#include "common/check.h"
#include "ops/preprocess/preprocess.h"

namespace fastdet {

// Plan.pixel_map(): source_channel, mul, add, pad, mean, std (3 each) and scale.
inline PixelMap pixel_map_from(const pybind11::dict& values) {
  const auto source_channel = values["source_channel"].cast<std::array<int, 3>>();
  const auto mul = values["mul"].cast<std::array<float, 3>>();
  const auto add = values["add"].cast<std::array<float, 3>>();
  const auto pad = values["pad"].cast<std::array<float, 3>>();
  const auto mean = values["mean"].cast<std::array<double, 3>>();
  const auto std = values["std"].cast<std::array<double, 3>>();
  FASTDET_CHECK(source_channel[0] + source_channel[1] + source_channel[2] == 3 &&
                    source_channel[0] != source_channel[1] &&
                    source_channel[1] != source_channel[2] &&
                    source_channel[0] != source_channel[2],
                "preprocess: source_channel must be a permutation of (0, 1, 2)");
  PixelMap map{};
  map.scale = values["scale"].cast<double>();
  for (int c = 0; c < 3; ++c) {
    FASTDET_CHECK(source_channel[c] >= 0 && source_channel[c] < 3,
                  "preprocess: source channel out of range: ", source_channel[c]);
    FASTDET_CHECK(std[c] != 0.0, "preprocess: std must be non-zero");
    map.source_channel[c] = source_channel[c];
    map.mul[c] = mul[c];
    map.add[c] = add[c];
    map.pad[c] = pad[c];
    map.mean[c] = mean[c];
    map.std[c] = std[c];
  }
  return map;
}

inline Resample resample_from(const std::string& name) {
  FASTDET_CHECK(name == "opencv" || name == "float",
                "preprocess: resample must be 'opencv' or 'float', got '", name, "'");
  return name == "opencv" ? Resample::OpenCV : Resample::Float;
}

}  // namespace fastdet
