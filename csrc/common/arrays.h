// Typed views of NumPy buffers with the checks every entry point needs (dtype, byte order, 1-D,
// contiguity). A non-native byte order is refused rather than read: '>i8' data read as '<i8' would
// be silently wrong ids.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/errors.h"

namespace mlaga {
namespace py = pybind11;

inline std::string dtype_name(const py::array& a) { return std::string(py::str(a.dtype())); }

inline void require_native_order(const py::array& a, const char* name) {
  // NumPy reports native order as '=' (or '|' for single bytes); only the foreign one is refused.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  const char foreign = '<';
#else
  const char foreign = '>';
#endif
  if (a.dtype().byteorder() == foreign) {
    value_error(name, " has non-native byte order (dtype '", dtype_name(a),
                "'); convert it first, e.g. arr.astype(arr.dtype.newbyteorder('='))");
  }
}

inline void require_1d_contiguous(const py::array& a, const char* name) {
  if (a.ndim() != 1) value_error(name, " must be 1-D, got ", a.ndim(), " dimensions");
  if (!(a.flags() & py::array::c_style)) value_error(name, " must be C-contiguous");
}

// Integer width of an index array: 4 or 8 bytes, signed, native order. Anything else is a ValueError.
inline int index_width(const py::array& a, const char* name) {
  const auto dt = a.dtype();
  if (dt.kind() != 'i' || (dt.itemsize() != 4 && dt.itemsize() != 8)) {
    value_error(name, " must be int32 or int64, got dtype '", dtype_name(a), "'");
  }
  require_native_order(a, name);
  return static_cast<int>(dt.itemsize());
}

// A 1-D, C-contiguous, native int64 array.
inline void require_int64_1d(const py::array& a, const char* name) {
  if (a.dtype().kind() != 'i' || a.dtype().itemsize() != 8) {
    value_error(name, " must be int64, got dtype '", dtype_name(a), "'");
  }
  require_native_order(a, name);
  require_1d_contiguous(a, name);
}

template <typename T>
inline const T* data_of(const py::array& a) {
  return static_cast<const T*>(a.data());
}

}  // namespace mlaga
