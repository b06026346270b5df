#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <vector>

#include "bindings/array_view.h"
#include "bindings/register.h"
#include "ops/preprocess/preprocess.h"

namespace py = pybind11;

namespace fastdet {
namespace {

using Channels3 = std::array<float, 3>;

void preprocess(const std::vector<py::array>& images,
                const std::vector<std::array<int64_t, 4>>& placements,
                const std::array<int, 3>& source_channel, const Channels3& mul,
                const Channels3& add, const Channels3& pad, py::array out) {
  std::vector<ImageView> views;
  views.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    const py::array& image = images[i];
    FASTDET_CHECK(
        image.dtype().is(py::dtype::of<uint8_t>()) && image.ndim() == 3 && image.shape(2) == 3,
        "preprocess: images[", i, "] must be a uint8 array of shape (H, W, 3)");
    views.push_back({static_cast<const uint8_t*>(image.data()), image.shape(0), image.shape(1),
                     image.strides(0), image.strides(1), image.strides(2)});
  }
  std::vector<Placement> places;
  for (const auto& p : placements) places.push_back({p[0], p[1], p[2], p[3]});
  PixelMap map{};
  FASTDET_CHECK(source_channel[0] + source_channel[1] + source_channel[2] == 3 &&
                    source_channel[0] != source_channel[1] &&
                    source_channel[1] != source_channel[2] &&
                    source_channel[0] != source_channel[2],
                "preprocess: source_channel must be a permutation of (0, 1, 2)");
  for (int c = 0; c < 3; ++c) {
    FASTDET_CHECK(source_channel[c] >= 0 && source_channel[c] < 3,
                  "preprocess: source channel out of range: ", source_channel[c]);
    map.source_channel[c] = source_channel[c];
    map.mul[c] = mul[c];
    map.add[c] = add[c];
    map.pad[c] = pad[c];
  }
  const bool is_f32 = out.dtype().is(py::dtype::of<float>());
  const bool is_f16 = out.dtype().is(py::dtype("float16"));
  FASTDET_CHECK((is_f32 || is_f16) && out.ndim() == 4 && out.shape(1) == 3 &&
                    out.shape(0) == static_cast<py::ssize_t>(images.size()) && out.writeable() &&
                    (out.flags() & py::array::c_style),
                "preprocess: out must be a writable C-contiguous float32/float16 array of shape (",
                images.size(), ", 3, H, W)");
  OutputPlanes planes{out.mutable_data(), out.shape(2), out.shape(3),
                      is_f32 ? OutputType::Float32 : OutputType::Float16};
  py::gil_scoped_release release;
  preprocess_cpu(views, places, map, planes);
}

}  // namespace

void register_preprocess(py::module_& m) {
  m.def("preprocess", &preprocess, py::arg("images"), py::arg("placements"),
        py::arg("source_channel"), py::arg("mul"), py::arg("add"), py::arg("pad"), py::arg("out"),
        "Fused resize + pad + channel map + scale + HWC->CHW into out (validated by fastdet).");
}

}  // namespace fastdet
