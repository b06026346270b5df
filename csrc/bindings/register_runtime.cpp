// The runtime: the CPU kernels' threads and instruction set, what the build and machine offer
// and, in CUDA builds, fastdet's own CUDA resources (fastdet/cuda.py): streams, timing events,
// CUDA graphs, pinned host memory, host-image staging and asynchronous copies.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/convert.h"
#include "bindings/register.h"
#include "common/thread_pool.h"
#include "ops/preprocess/preprocess.h"
#include "runtime/cuda_device.h"

#if defined(FASTDET_WITH_CUDA)
#include <cuda_runtime.h>

#include "common/cuda_check.h"
#include "runtime/cuda_buffer.h"
#include "runtime/cuda_stream.h"
#endif

namespace py = pybind11;

namespace fastdet {

#if defined(FASTDET_WITH_CUDA)
namespace {

// Host images (uint8, H x W x 3, any strides) through one pinned staging buffer into device
// memory of one device, as the ops upload their host inputs.
class HostStaging {
 public:
  explicit HostStaging(int device) : device_(device) {}

  std::vector<uintptr_t> upload(const std::vector<py::array>& images, uintptr_t stream) {
    std::vector<HostPiece> pieces;
    for (size_t i = 0; i < images.size(); ++i) {
      pieces.push_back(
          image_piece(image_view(images[i], "upload: images[" + std::to_string(i) + "]")));
    }
    std::vector<void*> device;
    {
      py::gil_scoped_release release;
      DeviceGuard guard(device_);
      device = uploader_.upload(pieces, as_stream(stream));
    }
    std::vector<uintptr_t> result;
    for (void* p : device) result.push_back(reinterpret_cast<uintptr_t>(p));
    return result;
  }

  void consumed(uintptr_t stream) {
    DeviceGuard guard(device_);
    uploader_.consumed(as_stream(stream));
  }

 private:
  int device_;
  HostUploader uploader_;
};

// A CudaGraph step on `stream`, with the stream's device current.
template <void (CudaGraph::*Step)(StreamHandle)>
void graph_step(CudaGraph& graph, uintptr_t stream, int device) {
  DeviceGuard guard(device);
  (graph.*Step)(as_stream(stream));
}

py::array pinned_empty(const std::vector<py::ssize_t>& shape, const py::dtype& dtype) {
  size_t bytes = size_t(dtype.itemsize());
  for (py::ssize_t s : shape) {
    FASTDET_CHECK(s >= 0, "pinned_empty: shape must not be negative");
    bytes *= size_t(s);
  }
  auto buffer = std::make_unique<PinnedBuffer>();
  {
    py::gil_scoped_release release;
    buffer->reserve(bytes);
  }
  void* data = buffer->data();
  py::capsule owner(buffer.release(), [](void* p) { delete static_cast<PinnedBuffer*>(p); });
  return py::array(dtype, shape, {}, data, owner);
}

}  // namespace
#endif

void register_runtime(py::module_& m) {
  m.attr("WITH_CUDA") = built_with_cuda();
  m.def("cuda_device_count", &cuda_device_count,
        "Number of visible CUDA devices (0 without a CUDA build or a GPU; never raises).");
  m.def("get_num_threads", &get_num_threads, "Threads used by the CPU kernels.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Sets the threads used by the CPU kernels (n >= 1).");
  m.def("cpu_kernels", &preprocess_cpu_kernels_name,
        "Instruction set of the CPU row kernels in use: 'avx2' or 'baseline'.");
#if defined(FASTDET_WITH_CUDA)
  py::class_<CudaStream>(m, "CudaStream", "A non-blocking CUDA stream owned by fastdet.")
      .def(py::init<int>(), py::arg("device"))
      .def_property_readonly(
          "handle", [](const CudaStream& s) { return reinterpret_cast<uintptr_t>(s.handle()); })
      .def_property_readonly("device", &CudaStream::device)
      .def("synchronize", &CudaStream::synchronize, py::call_guard<py::gil_scoped_release>());

  py::class_<TimingEvent>(m, "TimingEvent", "A CUDA event that times the work between records.")
      .def(py::init<>())
      .def(
          "record", [](TimingEvent& e, uintptr_t stream) { e.record(as_stream(stream)); },
          py::arg("stream"))
      .def("synchronize", &TimingEvent::synchronize, py::call_guard<py::gil_scoped_release>())
      .def("done", &TimingEvent::done)
      .def_property_readonly("recorded", &TimingEvent::recorded)
      .def("elapsed_ms_since", &TimingEvent::elapsed_ms_since, py::arg("start"));

  py::class_<CudaGraph>(m, "CudaGraph", "A CUDA graph captured from a stream.")
      .def(py::init<>())
      .def("begin_capture", &graph_step<&CudaGraph::begin_capture>, py::arg("stream"),
           py::arg("device"))
      .def("end_capture", &graph_step<&CudaGraph::end_capture>, py::arg("stream"),
           py::arg("device"))
      .def("abort_capture", &graph_step<&CudaGraph::abort_capture>, py::arg("stream"),
           py::arg("device"))
      .def("launch", &graph_step<&CudaGraph::launch>, py::arg("stream"), py::arg("device"),
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("ready", &CudaGraph::ready);

  py::class_<HostStaging>(m, "HostStaging",
                          "Uploads host images through pinned staging into device memory.")
      .def(py::init<int>(), py::arg("device"))
      .def("upload", &HostStaging::upload, py::arg("images"), py::arg("stream"),
           "Packs the images into pinned memory (in parallel when large) and queues one copy; "
           "returns each image's device address (C-contiguous H x W x 3).")
      .def("consumed", &HostStaging::consumed, py::arg("stream"),
           "Marks the end of the work on `stream` that reads the last upload.");

  m.def(
      "cuda_device_properties",
      [](int device) {
        cudaDeviceProp props{};
        FASTDET_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
        return std::make_tuple(std::string(props.name), props.major, props.minor,
                               size_t(props.totalGlobalMem), props.multiProcessorCount);
      },
      py::arg("device"),
      "(name, compute capability major, minor, total memory bytes, multiprocessors).");
  m.def("cuda_pinned_empty", &pinned_empty, py::arg("shape"), py::arg("dtype"),
        "A numpy array in page-locked host memory (freed with the array).");
  m.def(
      "cuda_copy_async",
      [](uintptr_t dst, uintptr_t src, size_t bytes, int device, uintptr_t stream) {
        DeviceGuard guard(device);
        copy_async(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes,
                   as_stream(stream));
      },
      py::arg("dst"), py::arg("src"), py::arg("bytes"), py::arg("device"), py::arg("stream"),
      "Queues a copy of `bytes` between any two addresses (device or pinned host) on `stream`.");
  m.def(
      "cuda_zero_async",
      [](uintptr_t ptr, size_t bytes, int device, uintptr_t stream) {
        DeviceGuard guard(device);
        zero_async(reinterpret_cast<void*>(ptr), bytes, as_stream(stream));
      },
      py::arg("ptr"), py::arg("bytes"), py::arg("device"), py::arg("stream"),
      "Queues the zeroing of `bytes` of device memory on `stream`.");
#endif
}

}  // namespace fastdet
