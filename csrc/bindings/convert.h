// Converters between the Python layer's objects and the ops' C++ types, shared by the register
// files. The Python layer validates first: the checks here are the second line and name the same
// arguments.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/box_transform.h"
#include "common/check.h"
#include "ops/postprocess/postprocess.h"
#include "ops/preprocess/preprocess.h"

#if defined(FASTDET_WITH_CUDA)
#include "runtime/cuda_buffer.h"
#endif

namespace fastdet {

template <typename T>
using CArray = pybind11::array_t<T, pybind11::array::c_style>;

template <typename T>
CArray<T> as_c_array(const pybind11::handle& value, const char* function, const char* name) {
  FASTDET_CHECK(CArray<T>::check_(value), function, ": ", name, " must be a C-contiguous ",
                pybind11::str(pybind11::dtype::of<T>()).cast<std::string>(), " array");
  return pybind11::reinterpret_borrow<CArray<T>>(value);
}

// A host image: uint8, (H, W, 3), any strides. `what` names it in the message ("resize: image").
// dtypes compare by value (equal), never by object (is), here and in every binding: an array
// that went through pickle (multiprocessing, Ray) carries its own copy of the dtype object.
inline ImageView image_view(const pybind11::array& image, const std::string& what) {
  FASTDET_CHECK(image.dtype().equal(pybind11::dtype::of<uint8_t>()) && image.ndim() == 3 &&
                    image.shape(2) == 3,
                what, " must be a uint8 array of shape (H, W, 3)");
  return {static_cast<const uint8_t*>(image.data()),
          image.shape(0),
          image.shape(1),
          image.strides(0),
          image.strides(1),
          image.strides(2)};
}

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

inline std::vector<Placement> placements_from(
    const std::vector<std::array<int64_t, 4>>& placements) {
  std::vector<Placement> result;
  for (const auto& p : placements) result.push_back({p[0], p[1], p[2], p[3]});
  return result;
}

// transforms: (B, 6) float64 rows of scale_x, scale_y, pad_x, pad_y, width, height.
inline std::vector<BoxTransform> box_transforms(const pybind11::handle& transforms_arg) {
  const auto rows = as_c_array<double>(transforms_arg, "postprocess", "transforms");
  FASTDET_CHECK(rows.ndim() == 2 && rows.shape(1) == 6,
                "postprocess: transforms must be a (B, 6) array");
  std::vector<BoxTransform> result;
  for (pybind11::ssize_t i = 0; i < rows.shape(0); ++i) {
    const double* r = rows.data(i, 0);
    result.push_back({static_cast<float>(r[0]), static_cast<float>(r[1]), static_cast<float>(r[2]),
                      static_cast<float>(r[3]), static_cast<float>(r[4]),
                      static_cast<float>(r[5])});
  }
  return result;
}

template <typename T>
pybind11::array_t<T> to_numpy(const std::vector<T>& values, std::vector<pybind11::ssize_t> shape) {
  pybind11::array_t<T> array(shape);
  if (!values.empty()) std::memcpy(array.mutable_data(), values.data(), values.size() * sizeof(T));
  return array;
}

// One (boxes (n, 4), scores (n,), classes (n,)) tuple per image.
using DetectionArrays =
    std::tuple<pybind11::array_t<float>, pybind11::array_t<float>, pybind11::array_t<int32_t>>;

inline std::vector<DetectionArrays> detection_arrays(const std::vector<DetectionList>& lists) {
  std::vector<DetectionArrays> result;
  for (const DetectionList& d : lists) {
    const auto n = static_cast<pybind11::ssize_t>(d.scores.size());
    result.emplace_back(to_numpy(d.boxes, {n, 4}), to_numpy(d.scores, {n}),
                        to_numpy(d.classes, {n}));
  }
  return result;
}

#if defined(FASTDET_WITH_CUDA)
// Streams cross the boundary as integers (cudaStream_t addresses; 0 and 1: the legacy default).
inline StreamHandle as_stream(uintptr_t stream) { return reinterpret_cast<StreamHandle>(stream); }

// (address, shape, element strides, dtype) of a device array, as fastdet.gpu passes them.
struct DeviceView {
  uintptr_t ptr;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  std::string dtype;
};

inline DeviceView device_view(const pybind11::handle& value) {
  const auto t = pybind11::reinterpret_borrow<pybind11::tuple>(value);
  FASTDET_CHECK(t.size() == 4, "fastdet: a device view is (ptr, shape, strides, dtype)");
  return {t[0].cast<uintptr_t>(), t[1].cast<std::vector<int64_t>>(),
          t[2].cast<std::vector<int64_t>>(), t[3].cast<std::string>()};
}

// A fastdet.DeviceArray (register_interop.cpp) over the C-contiguous content of `buffer`, which
// it keeps alive; written on `stream` of `device`.
pybind11::object device_array(std::shared_ptr<DeviceBuffer> buffer, std::vector<int64_t> shape,
                              const std::string& dtype, int device, uintptr_t stream);
#endif

}  // namespace fastdet
