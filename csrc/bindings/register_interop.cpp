// Interop with other GPU libraries (CUDA builds): DeviceArray, device memory fastdet hands to
// Python through __cuda_array_interface__ and __dlpack__ without a copy; DlpackTensor, a
// producer's DLPack capsule read in place; and the callers' streams and pointers as fastdet.gpu
// meets them (streams are integers: cudaStream_t addresses).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/convert.h"
#include "bindings/register.h"

#if defined(FASTDET_WITH_CUDA)
#include "bindings/dlpack.h"
#include "common/check.h"
#include "runtime/cuda_buffer.h"
#endif

namespace py = pybind11;

namespace fastdet {

#if defined(FASTDET_WITH_CUDA)
namespace {

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
    const int64_t item = t->dtype.bits / 8;
    code_ = t->dtype.code;
    bits_ = t->dtype.bits;
    for (int d = 0; d < t->ndim; ++d) shape_.push_back(t->shape[d]);
    strides_.resize(shape_.size());
    int64_t step = 1;
    for (int d = t->ndim - 1; d >= 0; --d) {
      strides_[d] = (t->strides ? t->strides[d] : step) * item;
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
  uint8_t code_ = 0;
  uint8_t bits_ = 0;
  bool readonly_ = false;
};

}  // namespace

namespace {

DeviceArray owning_array(std::shared_ptr<DeviceBuffer> buffer, std::vector<int64_t> shape,
                         const std::string& dtype, int device, uintptr_t stream) {
  const auto ptr = reinterpret_cast<uintptr_t>(buffer->data());
  return DeviceArray(std::move(buffer), py::none(), ptr, std::move(shape), dtype, device, stream);
}

}  // namespace

py::object device_array(std::shared_ptr<DeviceBuffer> buffer, std::vector<int64_t> shape,
                        const std::string& dtype, int device, uintptr_t stream) {
  return py::cast(owning_array(std::move(buffer), std::move(shape), dtype, device, stream));
}
#endif

void register_interop(py::module_& m) {
#if defined(FASTDET_WITH_CUDA)
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
        return owning_array(std::move(buffer), shape, dtype, device, stream);
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
#else
  static_cast<void>(m);  // a CPU build offers no GPU arrays
#endif
}

}  // namespace fastdet
