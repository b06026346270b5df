// One register_<area> per bindings file; module.cpp calls them all. Each registers what the build
// offers: the CPU face always, the CUDA face in CUDA builds (FASTDET_WITH_CUDA).
#pragma once

#include <pybind11/pybind11.h>

namespace fastdet {

// Threads, build and machine facts; fastdet's CUDA streams, events, graphs, pinned memory.
void register_runtime(pybind11::module_& m);
// DeviceArray, DlpackTensor and the callers' streams and pointers (CUDA builds only).
void register_interop(pybind11::module_& m);
void register_preprocess(pybind11::module_& m);
void register_nms(pybind11::module_& m);
void register_postprocess(pybind11::module_& m);

}  // namespace fastdet
