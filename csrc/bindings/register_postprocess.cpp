#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <tuple>
#include <vector>

#include "bindings/array_view.h"
#include "bindings/register.h"
#include "ops/postprocess/postprocess.h"

namespace py = pybind11;

namespace fastdet {
namespace {

using DetectionArrays = std::tuple<py::array_t<float>, py::array_t<float>, py::array_t<int32_t>>;

// transforms: (B, 6) float64 rows of scale_x, scale_y, pad_x, pad_y, width, height.
std::vector<BoxTransform> box_transforms(const py::handle& transforms_arg) {
  const auto rows = as_c_array<double>(transforms_arg, "postprocess", "transforms");
  FASTDET_CHECK(rows.ndim() == 2 && rows.shape(1) == 6,
                "postprocess: transforms must be a (B, 6) array");
  std::vector<BoxTransform> result;
  for (py::ssize_t i = 0; i < rows.shape(0); ++i) {
    const double* r = rows.data(i, 0);
    result.push_back({static_cast<float>(r[0]), static_cast<float>(r[1]), static_cast<float>(r[2]),
                      static_cast<float>(r[3]), static_cast<float>(r[4]),
                      static_cast<float>(r[5])});
  }
  return result;
}

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

template <typename T>
py::array_t<T> to_numpy(const std::vector<T>& values, std::vector<py::ssize_t> shape) {
  py::array_t<T> array(shape);
  if (!values.empty()) std::memcpy(array.mutable_data(), values.data(), values.size() * sizeof(T));
  return array;
}

std::vector<DetectionArrays> to_python(const std::vector<DetectionList>& lists) {
  std::vector<DetectionArrays> result;
  for (const DetectionList& d : lists) {
    const auto n = static_cast<py::ssize_t>(d.scores.size());
    result.emplace_back(to_numpy(d.boxes, {n, 4}), to_numpy(d.scores, {n}),
                        to_numpy(d.classes, {n}));
  }
  return result;
}

template <typename Run>
std::vector<DetectionArrays> run_released(Run run) {
  std::vector<DetectionList> lists;
  {
    py::gil_scoped_release release;
    lists = run();
  }
  return to_python(lists);
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
}

}  // namespace fastdet
