#include <pybind11/numpy.h>

#include <cmath>
#include <cstring>
#include <optional>

#include "bindings/array_view.h"
#include "bindings/register.h"
#include "common/interrupt.h"
#include "ops/nms/nms.h"

namespace py = pybind11;

namespace fastdet {
namespace {

void check_all_finite(const float* values, int64_t count, int64_t row_width, const char* name) {
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) {
      if (row_width > 1) {
        FASTDET_CHECK(false, "nms: ", name, " must be finite, got ", values[i], " at ", name, "[",
                      i / row_width, ", ", i % row_width, "]");
      }
      FASTDET_CHECK(false, "nms: ", name, " must be finite, got ", values[i], " at ", name, "[", i,
                    "]");
    }
  }
}

// Ctrl-C during a long call: asked by the kernel every few milliseconds of work, from this (the
// calling) thread, with the GIL released around it. PyErr_CheckSignals runs the Python handlers
// of pending signals (only in the main thread); a handler's exception stays pending until
// nms() re-raises it.
bool python_signal_raised() {
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

py::array_t<int64_t> nms(const py::handle& boxes_arg, const py::handle& scores_arg,
                         const py::handle& classes_arg, float iou_threshold, int64_t max_det) {
  const auto boxes = as_c_array<float>(boxes_arg, "nms", "boxes");
  const auto scores = as_c_array<float>(scores_arg, "nms", "scores");
  const int64_t n = scores.size();
  FASTDET_CHECK(boxes.ndim() == 2 && boxes.shape(0) == n && boxes.shape(1) == 4,
                "nms: boxes must have shape (", n, ", 4)");
  std::optional<CArray<int32_t>> classes;
  if (!classes_arg.is_none()) {
    classes = as_c_array<int32_t>(classes_arg, "nms", "classes");
    FASTDET_CHECK(classes->size() == n, "nms: classes must have ", n, " entries");
  }
  std::vector<int64_t> keep;
  try {
    py::gil_scoped_release release;
    check_all_finite(boxes.data(), n * 4, 4, "boxes");
    check_all_finite(scores.data(), n, 1, "scores");
    NmsOptions options;
    options.iou_threshold = iou_threshold;
    options.max_det = max_det;
    keep = nms_cpu(boxes.data(), scores.data(), classes ? classes->data() : nullptr, n, options,
                   python_signal_raised);
  } catch (const Interrupted&) {
    throw py::error_already_set();  // the GIL is held again: the handler's exception propagates
  }
  py::array_t<int64_t> result(static_cast<py::ssize_t>(keep.size()));
  if (!keep.empty()) std::memcpy(result.mutable_data(), keep.data(), keep.size() * sizeof(int64_t));
  return result;
}

}  // namespace

void register_nms(py::module_& m) {
  m.def("nms", &nms, py::arg("boxes"), py::arg("scores"), py::arg("classes"),
        py::arg("iou_threshold"), py::arg("max_det"),
        "Greedy per-class NMS, torchvision semantics; returns kept indices by score.");
}

}  // namespace fastdet
