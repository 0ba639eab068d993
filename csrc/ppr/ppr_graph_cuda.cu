// A PprGraph's copy on a CUDA device, and one query on it.
//
// Why the C++ side owns the device copy: the kernel indexes with every graph array and every
// source, so each must be one that was validated. The graph is uploaded from the PprGraph's own
// (validated, private) host arrays, and the sources from the host vector that
// PprGraph::internal_sources checked; nothing the kernel indexes with comes from a raw pointer.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/errors.h"
#include "ppr/ppr_graph.h"

namespace mlaga {
namespace ppr {

namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so later calls start clean
    throw std::runtime_error(std::string("PPR on CUDA: ") + what + ": " + cudaGetErrorString(err));
  }
}

// Selects `device` for this scope and restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

// cudaMalloc'd bytes, freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes > 0) check_cuda(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    return *this;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

template <typename T>
DeviceBuffer upload(const T* host, size_t count, cudaStream_t stream) {
  DeviceBuffer buf(count * sizeof(T));
  if (count > 0) {
    check_cuda(cudaMemcpyAsync(buf.as<T>(), host, count * sizeof(T), cudaMemcpyHostToDevice, stream), "upload");
  }
  return buf;
}

}  // namespace

struct DeviceGraph {
  DeviceBuffer indptr, indices, caller_ids;
};

const DeviceGraph& PprGraph::on_device(int device) const {
  std::lock_guard<std::mutex> lock(device_mutex_);
  if (device < 0) value_error("CUDA device index must be >= 0, got ", device);
  if (devices_.size() <= static_cast<size_t>(device)) devices_.resize(static_cast<size_t>(device) + 1);
  if (!devices_[device]) {
    DeviceScope scope(device);
    auto dg = std::make_shared<DeviceGraph>();
    dg->indptr = upload(indptr_.data(), indptr_.size(), nullptr);
    if (width_ == 4) {
      dg->indices = upload(indices32_.data(), indices32_.size(), nullptr);
    } else {
      dg->indices = upload(indices64_.data(), indices64_.size(), nullptr);
    }
    dg->caller_ids = upload(caller_of_.data(), caller_of_.size(), nullptr);
    check_cuda(cudaStreamSynchronize(nullptr), "graph upload");
    devices_[device] = std::move(dg);
  }
  return *devices_[device];
}

void topk_on_device(const PprGraph& g, const std::vector<int64_t>& sources, const uint8_t* candidates,
                    const PprOptions& opt, int64_t capacity, int64_t num_warps, int device, uintptr_t stream_handle,
                    void* scratch, int64_t* out_idx, float* out_val, int32_t* status, int64_t* edge_pushes) {
  if (sources.empty()) return;
  const DeviceGraph& dg = g.on_device(device);
  DeviceScope scope(device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  DeviceBuffer src = upload(sources.data(), sources.size(), stream);
  DeviceBuffer cand = candidates != nullptr ? upload(candidates, static_cast<size_t>(g.num_nodes()), stream)
                                            : DeviceBuffer();
  PprProblem pb;
  pb.indptr = dg.indptr.as<const int64_t>();
  pb.indices = dg.indices.as<const void>();
  pb.index_width = g.index_width();
  pb.num_nodes = g.num_nodes();
  pb.nnz = g.num_edges();
  pb.caller_ids = g.caller_ids().empty() ? nullptr : dg.caller_ids.as<const int64_t>();
  pb.sources = src.as<const int64_t>();
  pb.num_sources = static_cast<int64_t>(sources.size());
  pb.candidates = candidates != nullptr ? cand.as<const uint8_t>() : nullptr;
  ppr_topk_cuda(pb, opt, capacity, num_warps, scratch, out_idx, out_val, status, edge_pushes, stream_handle);
  // The uploads above are freed on return: wait for the kernel that reads them.
  check_cuda(cudaStreamSynchronize(stream), "push kernel");
}

}  // namespace ppr
}  // namespace mlaga
