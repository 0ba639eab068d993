// Borrowed views of DLPack capsules (torch.utils.dlpack.to_dlpack) with every check a CUDA entry
// point needs before it writes through the pointer: device, dtype, shape and contiguity.
//
// The structs follow the DLPack ABI (dlpack.h, unversioned "dltensor" capsules, stable since
// v0.2); only the fields read here are declared. The capsule is borrowed, not consumed: its name
// is left as is, so the producer's destructor still frees it, and the caller keeps the tensor
// alive for the duration of the call.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/errors.h"

namespace mlaga {
namespace dl {

enum DeviceType : int32_t { kCPU = 1, kCUDA = 2 };
enum TypeCode : uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBool = 6 };

struct Device {
  int32_t device_type;
  int32_t device_id;
};
struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // nullptr = compact row-major
  uint64_t byte_offset;
};
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor*);
};

// The data pointer of `obj`, a "dltensor" capsule holding a C-contiguous tensor on CUDA device
// `device` with the given dtype and shape. ValueError naming `name` and the mismatch otherwise.
inline void* cuda_data(const pybind11::handle& obj, const char* name, int device, TypeCode code, int bits,
                       std::initializer_list<int64_t> shape) {
  if (!PyCapsule_CheckExact(obj.ptr()) || !PyCapsule_IsValid(obj.ptr(), "dltensor")) {
    value_error(name, " must be an unconsumed DLPack capsule (torch.utils.dlpack.to_dlpack)");
  }
  auto* mt = static_cast<ManagedTensor*>(PyCapsule_GetPointer(obj.ptr(), "dltensor"));
  const Tensor& t = mt->dl_tensor;
  if (t.device.device_type != kCUDA || t.device.device_id != device) {
    value_error(name, " must be on CUDA device ", device, ", got device type ", t.device.device_type, " id ",
                t.device.device_id);
  }
  if (t.dtype.code != code || t.dtype.bits != bits || t.dtype.lanes != 1) {
    value_error(name, " has the wrong dtype (code ", int(t.dtype.code), ", ", int(t.dtype.bits), " bits)");
  }
  if (t.ndim != static_cast<int32_t>(shape.size())) value_error(name, " must have ", shape.size(), " dimensions");
  int64_t expect_stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    const int64_t want = *(shape.begin() + d);
    if (want >= 0 && t.shape[d] != want) value_error(name, " dimension ", d, " must be ", want, ", got ", t.shape[d]);
    if (t.strides != nullptr && t.shape[d] > 1 && t.strides[d] != expect_stride) {
      value_error(name, " must be C-contiguous");
    }
    expect_stride *= t.shape[d];
  }
  return static_cast<char*>(t.data) + t.byte_offset;
}

// Number of elements of a 1-D capsule (after cuda_data has checked it).
inline int64_t length(const pybind11::handle& obj) {
  auto* mt = static_cast<ManagedTensor*>(PyCapsule_GetPointer(obj.ptr(), "dltensor"));
  return mt->dl_tensor.shape[0];
}

}  // namespace dl
}  // namespace mlaga
