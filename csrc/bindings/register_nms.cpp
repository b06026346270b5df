// nms: the CPU function and, in CUDA builds, NmsCuda.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "bindings/convert.h"
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

NmsOptions nms_options(float iou_threshold, int64_t max_det) {
  NmsOptions options;
  options.iou_threshold = iou_threshold;
  options.max_det = max_det;
  return options;
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
    keep = nms_cpu(boxes.data(), scores.data(), classes ? classes->data() : nullptr, n,
                   nms_options(iou_threshold, max_det), python_signal_raised);
  } catch (const Interrupted&) {
    throw py::error_already_set();  // the GIL is held again: the handler's exception propagates
  }
  return to_numpy(keep, {static_cast<py::ssize_t>(keep.size())});
}

#if defined(FASTDET_WITH_CUDA)
// boxes, scores, classes: numpy arrays (on_host; float32, float32, int32 or None, contiguous)
// or device views. Returns the kept indices as numpy (as_numpy) or as a DeviceArray.
py::object nms_cuda(NmsCuda& op, const py::object& boxes, const py::object& scores,
                    const py::object& classes, int64_t n, float iou_threshold, int64_t max_det,
                    bool on_host, bool as_numpy, int device, uintptr_t stream) {
  NmsCudaInput input{};
  input.n = n;
  input.on_host = on_host;
  std::optional<CArray<float>> host_boxes, host_scores;
  std::optional<CArray<int32_t>> host_classes;
  if (on_host) {
    host_boxes = as_c_array<float>(boxes, "nms", "boxes");
    host_scores = as_c_array<float>(scores, "nms", "scores");
    FASTDET_CHECK(host_boxes->size() == n * 4 && host_scores->size() == n,
                  "nms: boxes must have shape (", n, ", 4)");
    input.boxes = host_boxes->data();
    input.box_strides[0] = 4;
    input.box_strides[1] = 1;
    input.scores = host_scores->data();
    input.score_stride = 1;
    if (!classes.is_none()) {
      host_classes = as_c_array<int32_t>(classes, "nms", "classes");
      FASTDET_CHECK(host_classes->size() == n, "nms: classes must have ", n, " entries");
      input.classes = host_classes->data();
      input.class_stride = 1;
    }
  } else {
    const DeviceView b = device_view(boxes);
    const DeviceView s = device_view(scores);
    FASTDET_CHECK(
        b.dtype == "float32" && b.shape.size() == 2 && b.shape[0] == n && b.shape[1] == 4 &&
            s.dtype == "float32" && s.shape.size() == 1 && s.shape[0] == n,
        "nms: boxes and scores must be float32 GPU arrays of shapes (", n, ", 4), (", n, ")");
    input.boxes = reinterpret_cast<const float*>(b.ptr);
    input.box_strides[0] = b.strides[0];
    input.box_strides[1] = b.strides[1];
    input.scores = reinterpret_cast<const float*>(s.ptr);
    input.score_stride = s.strides[0];
    if (!classes.is_none()) {
      const DeviceView c = device_view(classes);
      FASTDET_CHECK(
          (c.dtype == "int32" || c.dtype == "int64") && c.shape.size() == 1 && c.shape[0] == n,
          "nms: classes must be an int32 or int64 GPU array of shape (", n, ")");
      input.classes = reinterpret_cast<const void*>(c.ptr);
      input.classes_int64 = c.dtype == "int64";
      input.class_stride = c.strides[0];
    }
  }
  const NmsOptions options = nms_options(iou_threshold, max_det);
  // The op's mutex is taken with the GIL released (never wait for it while holding the GIL).
  std::vector<int64_t> host_indices;
  auto buffer = std::make_shared<DeviceBuffer>();
  int64_t kept = 0;
  {
    py::gil_scoped_release release;
    DeviceGuard guard(device);
    std::lock_guard<std::mutex> lock(op.mutex());
    op.enqueue(input, options, as_stream(stream));
    stream_synchronize(as_stream(stream));
    kept = op.kept_count();
    const size_t bytes = size_t(kept) * sizeof(int64_t);
    if (as_numpy) {
      host_indices.resize(size_t(kept));
      copy_sync(host_indices.data(), op.device_indices(), bytes);
    } else {
      buffer->allocate_for_caller(bytes, as_stream(stream));
      copy_async(buffer->data(), op.device_indices(), bytes, as_stream(stream));
      stream_synchronize(as_stream(stream));  // the workspace may be reused at once
    }
  }
  if (as_numpy) return to_numpy(host_indices, {static_cast<py::ssize_t>(kept)});
  return device_array(std::move(buffer), {kept}, "int64", device, stream);
}
#endif

}  // namespace

void register_nms(py::module_& m) {
  m.def("nms", &nms, py::arg("boxes"), py::arg("scores"), py::arg("classes"),
        py::arg("iou_threshold"), py::arg("max_det"),
        "Greedy per-class NMS, torchvision semantics; returns kept indices by score.");
#if defined(FASTDET_WITH_CUDA)
  py::class_<NmsCuda>(m, "NmsCuda")
      .def(py::init<>())
      .def("run", &nms_cuda, py::arg("boxes"), py::arg("scores"), py::arg("classes"), py::arg("n"),
           py::arg("iou_threshold"), py::arg("max_det"), py::arg("on_host"), py::arg("as_numpy"),
           py::arg("device"), py::arg("stream"));
#endif
}

}  // namespace fastdet
