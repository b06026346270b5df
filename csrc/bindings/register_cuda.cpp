// The CUDA ops and GPU-array interop (compiled only with FASTDET_WITH_CUDA). The Python layer
// (fastdet/gpu.py) reads the callers' arrays and streams and passes plain addresses, shapes and
// element strides here; host (numpy) arrays are passed as arrays and uploaded by the ops.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/array_view.h"
#include "bindings/dlpack.h"
#include "bindings/preprocess_args.h"
#include "bindings/register.h"
#include "common/check.h"
#include "ops/nms/nms.h"
#include "ops/postprocess/postprocess.h"
#include "ops/preprocess/preprocess.h"
#include "runtime/cuda_buffer.h"

namespace py = pybind11;

namespace fastdet {
namespace {

StreamHandle as_stream(uintptr_t stream) { return reinterpret_cast<StreamHandle>(stream); }

// Streams 0 and 1 are both the legacy default stream.
bool same_stream(uintptr_t a, uintptr_t b) { return a == b || (a <= 1 && b <= 1); }

// ---------------------------------------------------------------------------------------------
// DeviceArray: device memory handed to Python, readable through __cuda_array_interface__ and
// __dlpack__ without a copy.
// ---------------------------------------------------------------------------------------------

struct ItemType {
  std::string typestr;  // numpy's array-interface type string
  dlpack::DataType dl;
  int64_t size;
};

ItemType item_type(const std::string& dtype) {
  if (dtype == "float32") return {"<f4", {dlpack::kFloat, 32, 1}, 4};
  if (dtype == "float16") return {"<f2", {dlpack::kFloat, 16, 1}, 2};
  if (dtype == "int64") return {"<i8", {dlpack::kInt, 64, 1}, 8};
  if (dtype == "int32") return {"<i4", {dlpack::kInt, 32, 1}, 4};
  if (dtype == "uint8") return {"|u1", {dlpack::kUInt, 8, 1}, 1};
  throw ValueError(detail::concat("DeviceArray: unsupported dtype ", dtype));
}

class DeviceArray {
 public:
  DeviceArray(std::shared_ptr<DeviceBuffer> buffer, py::object owner, uintptr_t ptr,
              std::vector<int64_t> shape, std::string dtype, int device, uintptr_t stream)
      : buffer_(std::move(buffer)),
        owner_(std::move(owner)),
        ptr_(ptr),
        shape_(std::move(shape)),
        dtype_(std::move(dtype)),
        type_(item_type(dtype_)),
        device_(device),
        stream_(stream) {}

  uintptr_t ptr() const { return ptr_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& dtype() const { return dtype_; }
  int device() const { return device_; }
  uintptr_t stream() const { return stream_; }
  int64_t size() const {
    int64_t n = 1;
    for (int64_t s : shape_) n *= s;
    return n;
  }
  int64_t nbytes() const { return size() * type_.size; }

  py::dict cuda_array_interface() const {
    py::dict cai;
    cai["shape"] = py::tuple(py::cast(shape_));
    cai["typestr"] = type_.typestr;
    cai["data"] = py::make_tuple(ptr_, false);
    cai["version"] = 3;
    cai["strides"] = py::none();
    // The stream the data was written on; 0 (the legacy default stream) is spelled 1 here.
    cai["stream"] = stream_ == 0 ? uintptr_t(1) : stream_;
    return cai;
  }

  py::tuple dlpack_device() const { return py::make_tuple(int(dlpack::kCUDA), device_); }

  py::array numpy() const {
    py::array result(py::dtype(dtype_), shape_);
    if (nbytes() > 0) {
      py::gil_scoped_release release;
      DeviceGuard guard(device_);
      stream_synchronize(as_stream(stream_));
      copy_sync(result.mutable_data(), reinterpret_cast<const void*>(ptr_), size_t(nbytes()));
    }
    return result;
  }

  // The DLPack exchange: `stream` is the consumer's (None: the legacy default stream, -1: none).
  py::capsule dlpack(const py::object& self, const py::object& stream) const;

 private:
  std::shared_ptr<DeviceBuffer> buffer_;
  py::object owner_;
  uintptr_t ptr_;
  std::vector<int64_t> shape_;
  std::string dtype_;
  ItemType type_;
  int device_;
  uintptr_t stream_;
};

struct DlpackContext {
  py::object owner;  // the DeviceArray, alive while a consumer holds the tensor
  std::vector<int64_t> shape;
  dlpack::ManagedTensor managed;
};

void delete_managed(dlpack::ManagedTensor* managed) {
  auto* context = static_cast<DlpackContext*>(managed->manager_ctx);
  if (!Py_IsInitialized()) return;  // at interpreter exit: leak rather than crash
  py::gil_scoped_acquire gil;
  delete context;
}

void delete_unconsumed_capsule(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* managed = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    if (managed && managed->deleter) managed->deleter(managed);
  }
}

py::capsule DeviceArray::dlpack(const py::object& self, const py::object& stream) const {
  if (stream.is_none() || py::cast<int64_t>(stream) != -1) {
    const uintptr_t consumer = stream.is_none() ? 1 : py::cast<uintptr_t>(stream);
    if (!same_stream(consumer, stream_)) {
      DeviceGuard guard(device_);
      stream_wait_stream(as_stream(consumer), as_stream(stream_));
    }
  }
  auto context = std::make_unique<DlpackContext>();
  context->owner = self;
  context->shape = shape_;
  dlpack::Tensor& t = context->managed.dl_tensor;
  t.data = reinterpret_cast<void*>(ptr_);
  t.device = {dlpack::kCUDA, device_};
  t.ndim = int32_t(shape_.size());
  t.dtype = type_.dl;
  t.shape = context->shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  context->managed.manager_ctx = context.get();
  context->managed.deleter = &delete_managed;
  dlpack::ManagedTensor* managed = &context->managed;
  PyObject* capsule = PyCapsule_New(managed, "dltensor", &delete_unconsumed_capsule);
  if (!capsule) throw py::error_already_set();
  context.release();
  return py::reinterpret_steal<py::capsule>(capsule);
}

// ---------------------------------------------------------------------------------------------
// Reading a producer's DLPack capsule (the consumer side).
// ---------------------------------------------------------------------------------------------

class DlpackTensor {
 public:
  explicit DlpackTensor(const py::capsule& capsule_arg) {
    PyObject* capsule = capsule_arg.ptr();
    const dlpack::Tensor* t = nullptr;
    if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
      versioned_ = static_cast<dlpack::ManagedTensorVersioned*>(
          PyCapsule_GetPointer(capsule, "dltensor_versioned"));
      FASTDET_CHECK(versioned_->version.major == 1, "DLPack: unsupported major version ",
                    versioned_->version.major);
      PyCapsule_SetName(capsule, "used_dltensor_versioned");
      t = &versioned_->dl_tensor;
      readonly_ = (versioned_->flags & dlpack::kFlagReadOnly) != 0;
    } else if (PyCapsule_IsValid(capsule, "dltensor")) {
      legacy_ = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
      PyCapsule_SetName(capsule, "used_dltensor");
      t = &legacy_->dl_tensor;
    } else {
      FASTDET_CHECK(false, "DLPack: the capsule is not an unconsumed 'dltensor'");
    }
    ptr_ = reinterpret_cast<uintptr_t>(t->data) + t->byte_offset;
    device_type_ = t->device.device_type;
    device_id_ = t->device.device_id;
    FASTDET_CHECK(t->dtype.lanes == 1, "DLPack: vector types are not supported");
    item_ = t->dtype.bits / 8;
    code_ = t->dtype.code;
    bits_ = t->dtype.bits;
    for (int d = 0; d < t->ndim; ++d) shape_.push_back(t->shape[d]);
    strides_.resize(shape_.size());
    int64_t step = 1;
    for (int d = t->ndim - 1; d >= 0; --d) {
      strides_[d] = (t->strides ? t->strides[d] : step) * item_;
      step *= shape_[d];
    }
  }
  ~DlpackTensor() {
    if (versioned_ && versioned_->deleter) versioned_->deleter(versioned_);
    if (legacy_ && legacy_->deleter) legacy_->deleter(legacy_);
  }
  DlpackTensor(const DlpackTensor&) = delete;
  DlpackTensor& operator=(const DlpackTensor&) = delete;

  uintptr_t ptr() const { return ptr_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }  // bytes
  int device_type() const { return device_type_; }
  int device_id() const { return device_id_; }
  bool readonly() const { return readonly_; }
  // The dtype as numpy names it ('float32', 'uint8', ...), or '' when numpy has no name for it.
  std::string dtype() const {
    if (code_ == dlpack::kFloat && (bits_ == 16 || bits_ == 32 || bits_ == 64)) {
      return "float" + std::to_string(bits_);
    }
    if (code_ == dlpack::kInt && bits_ >= 8 && bits_ <= 64) return "int" + std::to_string(bits_);
    if (code_ == dlpack::kUInt && bits_ >= 8 && bits_ <= 64) return "uint" + std::to_string(bits_);
    if (code_ == dlpack::kBool) return "bool";
    if (code_ == dlpack::kBfloat) return "bfloat16";
    return "";
  }

 private:
  dlpack::ManagedTensorVersioned* versioned_ = nullptr;
  dlpack::ManagedTensor* legacy_ = nullptr;
  uintptr_t ptr_ = 0;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  int device_type_ = 0;
  int device_id_ = 0;
  int64_t item_ = 1;
  uint8_t code_ = 0;
  uint8_t bits_ = 0;
  bool readonly_ = false;
};

// ---------------------------------------------------------------------------------------------
// The ops
// ---------------------------------------------------------------------------------------------

// (address, shape, element strides, dtype) of a device array, as fastdet.gpu passes them.
struct DeviceView {
  uintptr_t ptr;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  std::string dtype;
};

DeviceView device_view(const py::tuple& t) {
  FASTDET_CHECK(t.size() == 4, "fastdet: a device view is (ptr, shape, strides, dtype)");
  return {t[0].cast<uintptr_t>(), t[1].cast<std::vector<int64_t>>(),
          t[2].cast<std::vector<int64_t>>(), t[3].cast<std::string>()};
}

// images: numpy arrays (host) or device views (ptr, (h, w, 3), byte strides, 'uint8').
void preprocess_cuda(PreprocessCuda& op, const std::vector<py::object>& images, bool on_host,
                     const std::vector<std::array<int64_t, 4>>& placements,
                     const py::dict& pixel_map, const std::string& resample, uintptr_t out_ptr,
                     const std::string& out_dtype, const std::array<int64_t, 4>& out_shape,
                     int device, uintptr_t stream) {
  std::vector<ImageView> views;
  for (size_t i = 0; i < images.size(); ++i) {
    if (on_host) {
      const auto image = py::reinterpret_borrow<py::array>(images[i]);
      FASTDET_CHECK(
          image.dtype().is(py::dtype::of<uint8_t>()) && image.ndim() == 3 && image.shape(2) == 3,
          "preprocess: images[", i, "] must be a uint8 array of shape (H, W, 3)");
      views.push_back({static_cast<const uint8_t*>(image.data()), image.shape(0), image.shape(1),
                       image.strides(0), image.strides(1), image.strides(2)});
    } else {
      const DeviceView v = device_view(py::reinterpret_borrow<py::tuple>(images[i]));
      FASTDET_CHECK(
          v.dtype == "uint8" && v.shape.size() == 3 && v.shape[2] == 3 && v.strides.size() == 3,
          "preprocess: images[", i, "] must be a uint8 GPU array of shape (H, W, 3)");
      views.push_back({reinterpret_cast<const uint8_t*>(v.ptr), v.shape[0], v.shape[1],
                       v.strides[0], v.strides[1], v.strides[2]});
    }
  }
  std::vector<Placement> places;
  for (const auto& p : placements) places.push_back({p[0], p[1], p[2], p[3]});
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

py::array_t<int64_t> to_numpy_1d(const std::vector<int64_t>& values) {
  py::array_t<int64_t> array(static_cast<py::ssize_t>(values.size()));
  if (!values.empty()) {
    std::memcpy(array.mutable_data(), values.data(), values.size() * sizeof(int64_t));
  }
  return array;
}

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
    const DeviceView b = device_view(py::reinterpret_borrow<py::tuple>(boxes));
    const DeviceView s = device_view(py::reinterpret_borrow<py::tuple>(scores));
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
      const DeviceView c = device_view(py::reinterpret_borrow<py::tuple>(classes));
      FASTDET_CHECK(
          (c.dtype == "int32" || c.dtype == "int64") && c.shape.size() == 1 && c.shape[0] == n,
          "nms: classes must be an int32 or int64 GPU array of shape (", n, ")");
      input.classes = reinterpret_cast<const void*>(c.ptr);
      input.classes_int64 = c.dtype == "int64";
      input.class_stride = c.strides[0];
    }
  }
  NmsOptions options;
  options.iou_threshold = iou_threshold;
  options.max_det = max_det;
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
  if (as_numpy) return to_numpy_1d(host_indices);
  return py::cast(DeviceArray(buffer, py::none(), reinterpret_cast<uintptr_t>(buffer->data()),
                              {kept}, "int64", device, stream));
}

CudaTensor cuda_tensor(const py::object& value, bool on_host, const char* name) {
  if (on_host) {
    const auto array = py::reinterpret_borrow<py::array>(value);
    const bool half = array.dtype().is(py::dtype("float16"));
    FASTDET_CHECK(
        (array.dtype().is(py::dtype::of<float>()) || half) && (array.flags() & py::array::c_style),
        "postprocess: ", name, " must be a C-contiguous float32 or float16 array");
    CudaTensor t{array.data(), half, {}, {}};
    for (py::ssize_t d = 0; d < array.ndim(); ++d) {
      t.shape.push_back(array.shape(d));
      t.strides.push_back(array.strides(d) / array.itemsize());
    }
    return t;
  }
  const DeviceView v = device_view(py::reinterpret_borrow<py::tuple>(value));
  FASTDET_CHECK(v.dtype == "float32" || v.dtype == "float16", "postprocess: ", name,
                " must be a float32 or float16 GPU array, got ", v.dtype);
  return {reinterpret_cast<const void*>(v.ptr), v.dtype == "float16", v.shape, v.strides};
}

std::vector<BoxTransform> box_transforms(const py::handle& rows_arg) {
  const auto rows = as_c_array<double>(rows_arg, "postprocess", "transforms");
  FASTDET_CHECK(rows.ndim() == 2 && rows.shape(1) == 6,
                "postprocess: transforms must be a (B, 6) array");
  std::vector<BoxTransform> result;
  for (py::ssize_t i = 0; i < rows.shape(0); ++i) {
    const double* r = rows.data(i, 0);
    result.push_back(
        {float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])});
  }
  return result;
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
  for (const py::object& t : tensors) input.tensors.push_back(cuda_tensor(t, on_host, "outputs"));
  input.strides = strides;
  input.anchors = anchors;
  input.on_host = on_host;
  const std::vector<BoxTransform> transforms = box_transforms(transforms_arg);
  py::gil_scoped_release release;
  DeviceGuard guard(device);
  std::lock_guard<std::mutex> lock(op.mutex());
  op.enqueue(input, transforms, options, as_stream(stream));
}

template <typename T>
py::array_t<T> to_numpy(const std::vector<T>& values, std::vector<py::ssize_t> shape) {
  py::array_t<T> array(shape);
  if (!values.empty()) std::memcpy(array.mutable_data(), values.data(), values.size() * sizeof(T));
  return array;
}

using DetectionArrays = std::tuple<py::array_t<float>, py::array_t<float>, py::array_t<int32_t>>;

std::vector<DetectionArrays> postprocess_results(PostprocessCuda& op) {
  std::vector<DetectionList> lists;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(op.mutex());
    lists = op.results();
  }
  std::vector<DetectionArrays> result;
  for (const DetectionList& d : lists) {
    const auto n = static_cast<py::ssize_t>(d.scores.size());
    result.emplace_back(to_numpy(d.boxes, {n, 4}), to_numpy(d.scores, {n}),
                        to_numpy(d.classes, {n}));
  }
  return result;
}

}  // namespace

void register_cuda(py::module_& m) {
  py::class_<DeviceArray>(m, "DeviceArray",
                          "Device memory written by fastdet: wrap it with torch.from_dlpack, "
                          "cupy.asarray or anything that reads __cuda_array_interface__.")
      .def_property_readonly("ptr", &DeviceArray::ptr)
      .def_property_readonly("shape",
                             [](const DeviceArray& a) { return py::tuple(py::cast(a.shape())); })
      .def_property_readonly("dtype", [](const DeviceArray& a) { return py::dtype(a.dtype()); })
      .def_property_readonly("device", &DeviceArray::device)
      .def_property_readonly("stream", &DeviceArray::stream)
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def_property_readonly("__cuda_array_interface__", &DeviceArray::cuda_array_interface)
      .def("__dlpack_device__", &DeviceArray::dlpack_device)
      .def(
          "__dlpack__",
          [](const py::object& self, const py::object& stream, const py::object&, const py::object&,
             const py::object&) { return self.cast<const DeviceArray&>().dlpack(self, stream); },
          py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
          py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("numpy", &DeviceArray::numpy,
           "A host copy (synchronises the stream the array was written on).")
      .def("__len__",
           [](const DeviceArray& a) {
             FASTDET_CHECK(!a.shape().empty(), "len() of a 0-d DeviceArray");
             return a.shape()[0];
           })
      .def("__repr__", [](const DeviceArray& a) {
        std::string shape;
        for (size_t i = 0; i < a.shape().size(); ++i) {
          shape += (i ? ", " : "") + std::to_string(a.shape()[i]);
        }
        if (a.shape().size() == 1) shape += ",";
        return "DeviceArray(shape=(" + shape + "), dtype=" + a.dtype() +
               ", device=cuda:" + std::to_string(a.device()) + ")";
      });

  py::class_<DlpackTensor>(m, "DlpackTensor",
                           "A consumed DLPack capsule; the producer's memory lives as long as "
                           "this object.")
      .def(py::init<const py::capsule&>(), py::arg("capsule"))
      .def_property_readonly("ptr", &DlpackTensor::ptr)
      .def_property_readonly("shape",
                             [](const DlpackTensor& t) { return py::tuple(py::cast(t.shape())); })
      .def_property_readonly("strides",
                             [](const DlpackTensor& t) { return py::tuple(py::cast(t.strides())); })
      .def_property_readonly("dtype", &DlpackTensor::dtype)
      .def_property_readonly("device_type", &DlpackTensor::device_type)
      .def_property_readonly("device_id", &DlpackTensor::device_id)
      .def_property_readonly("readonly", &DlpackTensor::readonly);

  m.def(
      "cuda_empty",
      [](const std::vector<int64_t>& shape, const std::string& dtype, int device, uintptr_t stream,
         bool stream_ordered) {
        int64_t n = item_type(dtype).size;
        for (int64_t s : shape) n *= s;
        auto buffer = std::make_shared<DeviceBuffer>();
        {
          py::gil_scoped_release release;
          DeviceGuard guard(device);
          if (stream_ordered) {
            buffer->allocate_for_caller(size_t(n), as_stream(stream));
          } else {
            buffer->reserve(size_t(n));
          }
        }
        return DeviceArray(buffer, py::none(), reinterpret_cast<uintptr_t>(buffer->data()), shape,
                           dtype, device, stream);
      },
      py::arg("shape"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::arg("stream_ordered") = true,
      "Uninitialised device memory as a DeviceArray. Stream-ordered memory is freed on `stream` "
      "(which must outlive the array); otherwise cudaMalloc'd, freed with a device sync.");
  m.def(
      "cuda_view",
      [](const py::object& owner, uintptr_t ptr, const std::vector<int64_t>& shape,
         const std::string& dtype, int device, uintptr_t stream) {
        return DeviceArray(nullptr, owner, ptr, shape, dtype, device, stream);
      },
      py::arg("owner"), py::arg("ptr"), py::arg("shape"), py::arg("dtype"), py::arg("device"),
      py::arg("stream"), "A DeviceArray over memory that `owner` keeps alive.");
  m.def(
      "cuda_pointer_device",
      [](uintptr_t ptr) { return pointer_device(reinterpret_cast<void*>(ptr)); }, py::arg("ptr"),
      "The device of a device pointer; -1 for host memory.");
  m.def("cuda_current_device", &current_device);
  m.def(
      "cuda_stream_wait",
      [](uintptr_t consumer, uintptr_t producer, int device) {
        if (same_stream(consumer, producer)) return;
        DeviceGuard guard(device);
        stream_wait_stream(as_stream(consumer), as_stream(producer));
      },
      py::arg("consumer"), py::arg("producer"), py::arg("device"),
      "Makes `consumer` wait for the work queued on `producer` (no host synchronisation).");
  m.def(
      "cuda_stream_synchronize",
      [](uintptr_t stream, int device) {
        py::gil_scoped_release release;
        DeviceGuard guard(device);
        stream_synchronize(as_stream(stream));
      },
      py::arg("stream"), py::arg("device"));
  m.def(
      "cuda_copy_to_host",
      [](uintptr_t ptr, py::array out, int device, uintptr_t stream) {
        FASTDET_CHECK(out.flags() & py::array::c_style, "cuda_copy_to_host: out not contiguous");
        py::gil_scoped_release release;
        DeviceGuard guard(device);
        stream_synchronize(as_stream(stream));
        copy_sync(out.mutable_data(), reinterpret_cast<const void*>(ptr), size_t(out.nbytes()));
      },
      py::arg("ptr"), py::arg("out"), py::arg("device"), py::arg("stream"),
      "Synchronises `stream`, then copies out.nbytes bytes from the device address into out.");

  py::class_<PreprocessCuda>(m, "PreprocessCuda")
      .def(py::init<>())
      .def("run", &preprocess_cuda, py::arg("images"), py::arg("on_host"), py::arg("placements"),
           py::arg("pixel_map"), py::arg("resample"), py::arg("out_ptr"), py::arg("out_dtype"),
           py::arg("out_shape"), py::arg("device"), py::arg("stream"));
  py::class_<NmsCuda>(m, "NmsCuda")
      .def(py::init<>())
      .def("run", &nms_cuda, py::arg("boxes"), py::arg("scores"), py::arg("classes"), py::arg("n"),
           py::arg("iou_threshold"), py::arg("max_det"), py::arg("on_host"), py::arg("as_numpy"),
           py::arg("device"), py::arg("stream"));
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
}

}  // namespace fastdet
