#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

#include "bindings/array_view.h"
#include "bindings/preprocess_args.h"
#include "bindings/register.h"
#include "ops/preprocess/preprocess.h"

namespace py = pybind11;

namespace fastdet {
namespace {

ImageView image_view(const py::array& image, const char* what) {
  FASTDET_CHECK(
      image.dtype().is(py::dtype::of<uint8_t>()) && image.ndim() == 3 && image.shape(2) == 3, what,
      " must be a uint8 array of shape (H, W, 3)");
  return {static_cast<const uint8_t*>(image.data()),
          image.shape(0),
          image.shape(1),
          image.strides(0),
          image.strides(1),
          image.strides(2)};
}

void preprocess(const std::vector<py::array>& images,
                const std::vector<std::array<int64_t, 4>>& placements, const py::dict& pixel_map,
                const std::string& resample, py::array out) {
  std::vector<ImageView> views;
  views.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    views.push_back(
        image_view(images[i], ("preprocess: images[" + std::to_string(i) + "]").c_str()));
  }
  std::vector<Placement> places;
  for (const auto& p : placements) places.push_back({p[0], p[1], p[2], p[3]});
  const PixelMap map = pixel_map_from(pixel_map);
  const bool is_f32 = out.dtype().is(py::dtype::of<float>());
  const bool is_f16 = out.dtype().is(py::dtype("float16"));
  FASTDET_CHECK((is_f32 || is_f16) && out.ndim() == 4 && out.shape(1) == 3 &&
                    out.shape(0) == static_cast<py::ssize_t>(images.size()) && out.writeable() &&
                    (out.flags() & py::array::c_style),
                "preprocess: out must be a writable C-contiguous float32/float16 array of shape (",
                images.size(), ", 3, H, W)");
  OutputPlanes planes{out.mutable_data(), out.shape(2), out.shape(3),
                      is_f32 ? OutputType::Float32 : OutputType::Float16};
  const Resample mode = resample_from(resample);
  py::gil_scoped_release release;
  preprocess_cpu(views, places, map, mode, planes);
}

// A C-contiguous (height, width, 3) uint8 image of `image` resized like cv2.resize.
py::array resize(const py::array& image, int64_t height, int64_t width,
                 const std::string& interpolation) {
  const ImageView view = image_view(image, "resize: image");
  FASTDET_CHECK(interpolation == "linear" || interpolation == "area",
                "resize: interpolation must be 'linear' or 'area', got '", interpolation, "'");
  FASTDET_CHECK(height > 0 && width > 0, "resize: the size must be positive, got ", height, "x",
                width);
  py::array_t<uint8_t> out({height, width, int64_t(3)});
  uint8_t* data = out.mutable_data();
  const ResizeMode mode = interpolation == "linear" ? ResizeMode::Linear : ResizeMode::Area;
  py::gil_scoped_release release;
  resize_cpu(view, data, height, width, mode);
  return std::move(out);
}

}  // namespace

void register_preprocess(py::module_& m) {
  m.def("preprocess", &preprocess, py::arg("images"), py::arg("placements"), py::arg("pixel_map"),
        py::arg("resample"), py::arg("out"),
        "Fused resize + pad + channel map + scale + HWC->CHW into out (validated by fastdet).");
  m.def("resize", &resize, py::arg("image"), py::arg("height"), py::arg("width"),
        py::arg("interpolation"), "cv2.resize of a uint8 BGR image, bit for bit (fastdet.resize).");
}

}  // namespace fastdet
