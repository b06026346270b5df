#include <pybind11/pybind11.h>

#include <new>
#include <stdexcept>

#include "bindings/register.h"
#include "common/check.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastdet's compiled kernels (private: use the fastdet package)";
  m.attr("__version__") = FASTDET_VERSION;
  // Module-local translation of every C++ exception this module lets out. pybind11 otherwise
  // offers unknown exceptions to the translators every other pybind11 module registered
  // globally (torch's among them), compiled against other C++ runtimes.
  static py::handle cuda_error =
      py::exception<fastdet::CudaError>(m, "CudaError", PyExc_RuntimeError).release();
  py::register_local_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const fastdet::ValueError& e) {
      py::set_error(PyExc_ValueError, e.what());
    } catch (const fastdet::CudaError& e) {
      py::set_error(cuda_error, e.what());
    } catch (const py::builtin_exception& e) {
      e.set_error();
    } catch (const py::error_already_set& e) {
      py::set_error(PyExc_RuntimeError, e.what());
    } catch (const std::bad_alloc&) {
      py::set_error(PyExc_MemoryError, "fastdet: out of memory");
    } catch (const std::invalid_argument& e) {
      py::set_error(PyExc_ValueError, e.what());
    } catch (const std::out_of_range& e) {
      py::set_error(PyExc_IndexError, e.what());
    } catch (const std::exception& e) {
      py::set_error(PyExc_RuntimeError, e.what());
    } catch (...) {
      py::set_error(PyExc_RuntimeError, "fastdet: unknown C++ exception");
    }
  });
  fastdet::register_runtime(m);
  fastdet::register_interop(m);
  fastdet::register_preprocess(m);
  fastdet::register_nms(m);
  fastdet::register_postprocess(m);
}
