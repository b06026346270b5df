// postprocess (decode, confidence rule, NMS, mapping back) and boxes_to_original: the CPU
// functions and, in CUDA builds, PostprocessCuda.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/convert.h"
#include "bindings/register.h"
#include "ops/postprocess/postprocess.h"

#if defined(FASTDET_WITH_CUDA)
#include "runtime/cuda_stream.h"
#endif

namespace py = pybind11;

namespace fastdet {
namespace {

PostprocessOptions make_options(float conf, float iou, bool multi_label, int64_t max_det,
                                int64_t max_candidates, std::vector<int32_t> classes,
                                bool agnostic) {
  PostprocessOptions options;
  options.conf = conf;
  options.iou = iou;
  options.multi_label = multi_label;
  options.max_det = max_det;
  options.max_candidates = max_candidates;
  options.classes = std::move(classes);
  options.agnostic = agnostic;
  return options;
}

template <typename Run>
std::vector<DetectionArrays> run_released(Run run) {
  std::vector<DetectionList> lists;
  {
    py::gil_scoped_release release;
    lists = run();
  }
  return detection_arrays(lists);
}

// Shape checks for every array here were done by fastdet.postprocess; these guard the memory.
void check_rank(const py::array& a, const char* name, std::vector<py::ssize_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || a.shape(d) == shape[d];
  FASTDET_CHECK(ok, "postprocess: ", name, " has an unexpected shape");
}

std::vector<DetectionArrays> postprocess_yolov7(const py::handle& output_arg,
                                                const py::handle& transforms_arg,
                                                const PostprocessOptions& options) {
  const auto output = as_c_array<float>(output_arg, "postprocess", "outputs[0]");
  const auto transforms = box_transforms(transforms_arg);
  check_rank(output, "outputs[0]", {static_cast<py::ssize_t>(transforms.size()), -1, -1});
  const YoloV7GridOutput grid{output.data(), output.shape(1), output.shape(2)};
  return run_released([&] { return postprocess_yolov7_cpu(grid, transforms, options); });
}

std::vector<DetectionArrays> postprocess_yolov7_raw(const std::vector<py::handle>& level_args,
                                                    const std::vector<float>& strides,
                                                    const std::vector<std::vector<float>>& anchors,
                                                    const py::handle& transforms_arg,
                                                    const PostprocessOptions& options) {
  const auto transforms = box_transforms(transforms_arg);
  FASTDET_CHECK(level_args.size() == strides.size() && level_args.size() == anchors.size(),
                "postprocess: yolov7-raw needs one stride and one anchor set per level");
  std::vector<CArray<float>> arrays;
  std::vector<YoloV7RawLevel> levels;
  for (size_t i = 0; i < level_args.size(); ++i) {
    arrays.push_back(as_c_array<float>(level_args[i], "postprocess", "outputs"));
    const auto& a = arrays.back();
    check_rank(a, "a yolov7-raw level",
               {static_cast<py::ssize_t>(transforms.size()), -1, -1, -1, -1});
    FASTDET_CHECK(static_cast<py::ssize_t>(anchors[i].size()) == a.shape(1) * 2,
                  "postprocess: level ", i, " has ", a.shape(1), " anchors but ",
                  anchors[i].size() / 2, " anchor sizes were given");
    levels.push_back(
        {a.data(), a.shape(1), a.shape(2), a.shape(3), a.shape(4), strides[i], anchors[i]});
  }
  return run_released([&] { return postprocess_yolov7_raw_cpu(levels, transforms, options); });
}

std::vector<DetectionArrays> postprocess_damo(const py::handle& scores_arg,
                                              const py::handle& boxes_arg,
                                              const py::handle& transforms_arg,
                                              const PostprocessOptions& options) {
  const auto scores = as_c_array<float>(scores_arg, "postprocess", "scores");
  const auto boxes = as_c_array<float>(boxes_arg, "postprocess", "boxes");
  const auto transforms = box_transforms(transforms_arg);
  const auto batch = static_cast<py::ssize_t>(transforms.size());
  check_rank(scores, "scores", {batch, -1, -1});
  check_rank(boxes, "boxes", {batch, scores.shape(1), 4});
  const DamoOutput damo{scores.data(), boxes.data(), scores.shape(1), scores.shape(2)};
  return run_released([&] { return postprocess_damo_cpu(damo, transforms, options); });
}

std::vector<DetectionArrays> postprocess_end2end(const py::handle& num_dets_arg,
                                                 const py::handle& boxes_arg,
                                                 const py::handle& scores_arg,
                                                 const py::handle& classes_arg,
                                                 const py::handle& transforms_arg,
                                                 const PostprocessOptions& options) {
  const auto num_dets = as_c_array<int32_t>(num_dets_arg, "postprocess", "num_dets");
  const auto boxes = as_c_array<float>(boxes_arg, "postprocess", "det_boxes");
  const auto scores = as_c_array<float>(scores_arg, "postprocess", "det_scores");
  const auto classes = as_c_array<int32_t>(classes_arg, "postprocess", "det_classes");
  const auto transforms = box_transforms(transforms_arg);
  const auto batch = static_cast<py::ssize_t>(transforms.size());
  check_rank(num_dets, "num_dets", {batch});
  check_rank(boxes, "det_boxes", {batch, -1, 4});
  check_rank(scores, "det_scores", {batch, boxes.shape(1)});
  check_rank(classes, "det_classes", {batch, boxes.shape(1)});
  const End2EndOutput e2e{num_dets.data(), boxes.data(), scores.data(), classes.data(),
                          boxes.shape(1)};
  return run_released([&] { return postprocess_end2end_cpu(e2e, transforms, options); });
}

py::array_t<float> boxes_to_original(const py::handle& boxes_arg, const py::handle& transform_arg) {
  const auto boxes = as_c_array<float>(boxes_arg, "to_original", "boxes");
  FASTDET_CHECK(boxes.ndim() == 2 && boxes.shape(1) == 4,
                "to_original: boxes must have shape (n, 4)");
  const auto transform = box_transforms(transform_arg);
  FASTDET_CHECK(transform.size() == 1, "to_original: expected one transform");
  py::array_t<float> result({boxes.shape(0), py::ssize_t{4}});
  std::memcpy(result.mutable_data(), boxes.data(), boxes.size() * sizeof(float));
  boxes_to_original_cpu(result.mutable_data(), boxes.shape(0), transform[0]);
  return result;
}

#if defined(FASTDET_WITH_CUDA)
// One of the outputs: a numpy array (on_host) or a device view.
CudaTensor cuda_tensor(const py::object& value, bool on_host) {
  if (on_host) {
    const auto array = py::reinterpret_borrow<py::array>(value);
    const bool half = array.dtype().equal(py::dtype("float16"));
    FASTDET_CHECK((array.dtype().equal(py::dtype::of<float>()) || half) &&
                      (array.flags() & py::array::c_style),
                  "postprocess: outputs must be a C-contiguous float32 or float16 array");
    CudaTensor t{array.data(), half, {}, {}};
    for (py::ssize_t d = 0; d < array.ndim(); ++d) {
      t.shape.push_back(array.shape(d));
      t.strides.push_back(array.strides(d) / array.itemsize());
    }
    return t;
  }
  const DeviceView v = device_view(value);
  FASTDET_CHECK(v.dtype == "float32" || v.dtype == "float16",
                "postprocess: outputs must be a float32 or float16 GPU array, got ", v.dtype);
  return {reinterpret_cast<const void*>(v.ptr), v.dtype == "float16", v.shape, v.strides};
}

void postprocess_enqueue(PostprocessCuda& op, const std::string& format,
                         const std::vector<py::object>& tensors, bool on_host,
                         const std::vector<float>& strides,
                         const std::vector<std::vector<float>>& anchors,
                         const py::handle& transforms_arg, const PostprocessOptions& options,
                         int device, uintptr_t stream) {
  PostprocessCudaInput input;
  if (format == "yolov7") {
    input.format = CudaOutputFormat::YoloV7;
  } else if (format == "yolov7-raw") {
    input.format = CudaOutputFormat::YoloV7Raw;
  } else if (format == "damo") {
    input.format = CudaOutputFormat::Damo;
  } else {
    FASTDET_CHECK(false, "postprocess: format ", format, " has no CUDA implementation");
  }
  for (const py::object& t : tensors) input.tensors.push_back(cuda_tensor(t, on_host));
  input.strides = strides;
  input.anchors = anchors;
  input.on_host = on_host;
  const std::vector<BoxTransform> transforms = box_transforms(transforms_arg);
  py::gil_scoped_release release;
  DeviceGuard guard(device);
  std::lock_guard<std::mutex> lock(op.mutex());
  op.enqueue(input, transforms, options, as_stream(stream));
}

std::vector<DetectionArrays> postprocess_results(PostprocessCuda& op) {
  std::vector<DetectionList> lists;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(op.mutex());
    lists = op.results();
  }
  return detection_arrays(lists);
}
#endif

}  // namespace

void register_postprocess(py::module_& m) {
  py::class_<PostprocessOptions>(m, "PostprocessOptions")
      .def(py::init(&make_options), py::arg("conf"), py::arg("iou"), py::arg("multi_label"),
           py::arg("max_det"), py::arg("max_candidates"), py::arg("classes"), py::arg("agnostic"))
      .def_readonly("conf", &PostprocessOptions::conf)
      .def_readonly("iou", &PostprocessOptions::iou)
      .def_readonly("multi_label", &PostprocessOptions::multi_label)
      .def_readonly("max_det", &PostprocessOptions::max_det)
      .def_readonly("max_candidates", &PostprocessOptions::max_candidates)
      .def_readonly("classes", &PostprocessOptions::classes)
      .def_readonly("agnostic", &PostprocessOptions::agnostic);
  m.def("postprocess_yolov7", &postprocess_yolov7, py::arg("output"), py::arg("transforms"),
        py::arg("options"));
  m.def("postprocess_yolov7_raw", &postprocess_yolov7_raw, py::arg("levels"), py::arg("strides"),
        py::arg("anchors"), py::arg("transforms"), py::arg("options"));
  m.def("postprocess_damo", &postprocess_damo, py::arg("scores"), py::arg("boxes"),
        py::arg("transforms"), py::arg("options"));
  m.def("postprocess_end2end", &postprocess_end2end, py::arg("num_dets"), py::arg("boxes"),
        py::arg("scores"), py::arg("classes"), py::arg("transforms"), py::arg("options"));
  m.def("boxes_to_original", &boxes_to_original, py::arg("boxes"), py::arg("transform"));
#if defined(FASTDET_WITH_CUDA)
  py::class_<PostprocessCuda>(m, "PostprocessCuda")
      .def(py::init<>())
      .def("enqueue", &postprocess_enqueue, py::arg("format"), py::arg("tensors"),
           py::arg("on_host"), py::arg("strides"), py::arg("anchors"), py::arg("transforms"),
           py::arg("options"), py::arg("device"), py::arg("stream"))
      .def(
          "set_call_values",
          [](PostprocessCuda& op, const py::handle& transforms, float conf, float iou,
             const std::vector<int32_t>& classes) {
            const std::vector<BoxTransform> rows = box_transforms(transforms);
            std::lock_guard<std::mutex> lock(op.mutex());
            op.set_call_values(rows, conf, iou, classes);
          },
          py::arg("transforms"), py::arg("conf"), py::arg("iou"), py::arg("classes"))
      .def("results", &postprocess_results)
      .def("set_download_marker", &PostprocessCuda::set_download_marker, py::arg("event"),
           py::keep_alive<1, 2>(),
           "A TimingEvent recorded before the result's copy to the host in every later enqueue.")
      .def_property_readonly("batch", &PostprocessCuda::batch)
      .def_property_readonly("max_det", &PostprocessCuda::max_det)
      .def_property_readonly(
          "device_counts_ptr",
          [](const PostprocessCuda& op) { return reinterpret_cast<uintptr_t>(op.device_counts()); })
      .def_property_readonly("device_rows_ptr", [](const PostprocessCuda& op) {
        return reinterpret_cast<uintptr_t>(op.device_rows());
      });
#endif
}

}  // namespace fastdet
