#include "bindings/register.h"
#include "common/thread_pool.h"
#include "ops/preprocess/preprocess.h"
#include "runtime/cuda_device.h"

namespace py = pybind11;

namespace fastdet {

void register_runtime(py::module_& m) {
  m.attr("WITH_CUDA") = built_with_cuda();
  m.def("cuda_device_count", &cuda_device_count,
        "Number of visible CUDA devices (0 without a CUDA build or a GPU; never raises).");
  m.def("get_num_threads", &get_num_threads, "Threads used by the CPU kernels.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Sets the threads used by the CPU kernels (n >= 1).");
  m.def("cpu_kernels", &preprocess_cpu_kernels_name,
        "Instruction set of the CPU row kernels in use: 'avx2' or 'baseline'.");
}

}  // namespace fastdet
