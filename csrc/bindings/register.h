// One register_<area> per bindings file; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace fastdet {

void register_runtime(pybind11::module_& m);
void register_preprocess(pybind11::module_& m);
void register_nms(pybind11::module_& m);
void register_postprocess(pybind11::module_& m);
#if defined(FASTDET_WITH_CUDA)
// The CUDA ops, DeviceArray and DLPack/stream interop (register_cuda.cpp).
void register_cuda(pybind11::module_& m);
// Streams, timing events, graphs, pinned memory and staging (register_cuda_runtime.cpp).
void register_cuda_runtime(pybind11::module_& m);
#endif

}  // namespace fastdet
