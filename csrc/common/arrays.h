// Typed views of NumPy buffers with the checks every entry point needs (dtype, 1-D, contiguity).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/errors.h"

namespace mlaga {
namespace py = pybind11;

// Integer width of an index array: 4 or 8 bytes, signed. Anything else is a ValueError.
inline int index_width(const py::array& a, const char* name) {
  const auto dt = a.dtype();
  if (dt.kind() != 'i' || (dt.itemsize() != 4 && dt.itemsize() != 8)) {
    value_error(name, " must be int32 or int64, got dtype '", std::string(py::str(dt)), "'");
  }
  return static_cast<int>(dt.itemsize());
}

inline void require_1d_contiguous(const py::array& a, const char* name) {
  if (a.ndim() != 1) value_error(name, " must be 1-D, got ", a.ndim(), " dimensions");
  if (!(a.flags() & py::array::c_style)) value_error(name, " must be C-contiguous");
}

template <typename T>
inline const T* data_of(const py::array& a) {
  return static_cast<const T*>(a.data());
}

}  // namespace mlaga
