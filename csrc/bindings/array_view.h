// Checked access to numpy arrays handed over by the Python layer (which validates first: these
// checks are the second line and name the same arguments).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common/check.h"

namespace fastdet {

template <typename T>
using CArray = pybind11::array_t<T, pybind11::array::c_style>;

template <typename T>
CArray<T> as_c_array(const pybind11::handle& value, const char* function, const char* name) {
  FASTDET_CHECK(CArray<T>::check_(value), function, ": ", name, " must be a C-contiguous ",
                pybind11::str(pybind11::dtype::of<T>()).cast<std::string>(), " array");
  return pybind11::reinterpret_borrow<CArray<T>>(value);
}

}  // namespace fastdet
