#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "common/check.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastdet's compiled kernels (private: use the fastdet package)";
  m.attr("__version__") = FASTDET_VERSION;
  py::register_exception<fastdet::CudaError>(m, "CudaError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const fastdet::ValueError& e) {
      py::set_error(PyExc_ValueError, e.what());
    }
  });
  fastdet::register_runtime(m);
  fastdet::register_preprocess(m);
  fastdet::register_nms(m);
  fastdet::register_postprocess(m);
#if defined(FASTDET_WITH_CUDA)
  fastdet::register_cuda_runtime(m);
  fastdet::register_cuda(m);
#endif
}
