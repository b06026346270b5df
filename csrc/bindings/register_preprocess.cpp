// preprocess (letterbox or stretch, pad, channel map, scale, HWC -> CHW) and resize: the CPU
// functions and, in CUDA builds, PreprocessCuda.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "bindings/register.h"
#include "ops/preprocess/preprocess.h"

namespace py = pybind11;

namespace fastdet {
namespace {

void preprocess(const std::vector<py::array>& images,
                const std::vector<std::array<int64_t, 4>>& placements, const py::dict& pixel_map,
                const std::string& resample, py::array out) {
  std::vector<ImageView> views;
  views.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    views.push_back(image_view(images[i], "preprocess: images[" + std::to_string(i) + "]"));
  }
  const std::vector<Placement> places = placements_from(placements);
  const PixelMap map = pixel_map_from(pixel_map);
  const bool is_f32 = out.dtype().equal(py::dtype::of<float>());
  const bool is_f16 = out.dtype().equal(py::dtype("float16"));
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

#if defined(FASTDET_WITH_CUDA)
// images: numpy arrays (on_host) or device views (ptr, (h, w, 3), byte strides, 'uint8').
void preprocess_cuda(PreprocessCuda& op, const std::vector<py::object>& images, bool on_host,
                     const std::vector<std::array<int64_t, 4>>& placements,
                     const py::dict& pixel_map, const std::string& resample, uintptr_t out_ptr,
                     const std::string& out_dtype, const std::array<int64_t, 4>& out_shape,
                     int device, uintptr_t stream) {
  std::vector<ImageView> views;
  for (size_t i = 0; i < images.size(); ++i) {
    if (on_host) {
      views.push_back(image_view(py::reinterpret_borrow<py::array>(images[i]),
                                 "preprocess: images[" + std::to_string(i) + "]"));
    } else {
      const DeviceView v = device_view(images[i]);
      FASTDET_CHECK(
          v.dtype == "uint8" && v.shape.size() == 3 && v.shape[2] == 3 && v.strides.size() == 3,
          "preprocess: images[", i, "] must be a uint8 GPU array of shape (H, W, 3)");
      views.push_back({reinterpret_cast<const uint8_t*>(v.ptr), v.shape[0], v.shape[1],
                       v.strides[0], v.strides[1], v.strides[2]});
    }
  }
  const std::vector<Placement> places = placements_from(placements);
  const PixelMap map = pixel_map_from(pixel_map);
  const Resample mode = resample_from(resample);
  FASTDET_CHECK(out_dtype == "float32" || out_dtype == "float16",
                "preprocess: out must be float32 or float16, got ", out_dtype);
  FASTDET_CHECK(out_shape[0] == int64_t(images.size()) && out_shape[1] == 3,
                "preprocess: out must have shape (", images.size(), ", 3, H, W)");
  const OutputPlanes planes{reinterpret_cast<void*>(out_ptr), out_shape[2], out_shape[3],
                            out_dtype == "float32" ? OutputType::Float32 : OutputType::Float16};
  py::gil_scoped_release release;
  DeviceGuard guard(device);
  op.run(views, on_host, places, map, mode, planes, as_stream(stream));
}
#endif

}  // namespace

void register_preprocess(py::module_& m) {
  m.def("preprocess", &preprocess, py::arg("images"), py::arg("placements"), py::arg("pixel_map"),
        py::arg("resample"), py::arg("out"),
        "Fused resize + pad + channel map + scale + HWC->CHW into out (validated by fastdet).");
  m.def("resize", &resize, py::arg("image"), py::arg("height"), py::arg("width"),
        py::arg("interpolation"), "cv2.resize of a uint8 BGR image, bit for bit (fastdet.resize).");
#if defined(FASTDET_WITH_CUDA)
  py::class_<PreprocessCuda>(m, "PreprocessCuda")
      .def(py::init<>())
      .def("run", &preprocess_cuda, py::arg("images"), py::arg("on_host"), py::arg("placements"),
           py::arg("pixel_map"), py::arg("resample"), py::arg("out_ptr"), py::arg("out_dtype"),
           py::arg("out_shape"), py::arg("device"), py::arg("stream"));
#endif
}

}  // namespace fastdet
