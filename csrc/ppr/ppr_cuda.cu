// CUDA forward push: one warp per source, each warp with a bounded hash-table slab.
//
// Why a warp per source: sources are independent and most touch a few thousand nodes, so a warp
// (lanes over a node's neighbours) keeps every SM busy without inter-warp synchronisation. The
// per-source working set lives in a fixed slab (see push_core.h) so memory is bounded by
// num_warps * bounded_scratch_bytes(capacity, k) whatever the graph; a source that would need more
// reports status 1 and the Python caller recomputes it with the CPU kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "ppr/ppr.h"
#include "ppr/push_core.h"

namespace mlaga {
namespace ppr {

namespace {

constexpr int kWarpsPerBlock = 8;

struct WarpLanes {
  int lane;
  template <class F>
  __device__ __forceinline__ void each(F&& f) {
    f(lane);
  }
  template <class F>
  __device__ __forceinline__ void single(F&& f) {
    if (lane == 0) f();
  }
  __device__ __forceinline__ void sync() { __syncwarp(); }
  __device__ __forceinline__ bool stop() const { return false; }  // no host cancellation inside a kernel
  // Volatile loads: values written by other lanes through L2 atomics must not be served stale.
  template <typename T>
  __device__ __forceinline__ T load(const T* p) {
    return *static_cast<const volatile T*>(p);
  }
  template <typename T>
  __device__ __forceinline__ void store(T* p, T v) {
    *static_cast<volatile T*>(p) = v;
  }
  __device__ __forceinline__ double add(double* p, double v) { return atomicAdd(p, v); }
  __device__ __forceinline__ int32_t add(int32_t* p, int32_t v) { return atomicAdd(p, v); }
  __device__ __forceinline__ int64_t add(int64_t* p, int64_t v) {
    return static_cast<int64_t>(atomicAdd(reinterpret_cast<unsigned long long*>(p),
                                          static_cast<unsigned long long>(v)));
  }
  __device__ __forceinline__ int64_t cas(int64_t* p, int64_t expected, int64_t desired) {
    return static_cast<int64_t>(atomicCAS(reinterpret_cast<unsigned long long*>(p),
                                          static_cast<unsigned long long>(expected),
                                          static_cast<unsigned long long>(desired)));
  }
};

template <typename Index>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    ppr_bounded_kernel(const int64_t* __restrict__ indptr, const Index* __restrict__ indices,
                       const int64_t* __restrict__ caller_ids, const int64_t* __restrict__ sources, int64_t num_sources,
                       const uint8_t* __restrict__ candidates, PprOptions opt, int64_t capacity,
                       int64_t num_warps, unsigned char* scratch, int64_t slab_stride,
                       int64_t* out_idx, float* out_val, int32_t* status, int64_t* edge_pushes) {
  __shared__ BoundedControl controls[kWarpsPerBlock];
  const int warp_in_block = threadIdx.x / 32;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp_in_block;
  if (warp >= num_warps) return;  // whole warps exit together
  WarpLanes lanes{static_cast<int>(threadIdx.x % 32)};
  const BoundedSlab slab = carve_slab(scratch + warp * slab_stride, capacity, opt.k);
  BoundedControl& ctl = controls[warp_in_block];
  for (int64_t i = warp; i < num_sources; i += num_warps) {
    const int32_t st = bounded_push_source(lanes, slab, ctl, capacity, indptr, indices, caller_ids, candidates,
                                           sources[i], opt, out_idx + i * opt.k,
                                           out_val + i * opt.k, edge_pushes + i);
    if (lanes.lane == 0) status[i] = st;
  }
}

// Marks every key slot empty (-1) in each warp's slab and zeroes r and p.
__global__ void init_slabs_kernel(unsigned char* scratch, int64_t slab_stride, int64_t num_warps,
                                  int64_t capacity, int64_t k) {
  const int64_t total = num_warps * capacity;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t w = t / capacity;
    const int64_t i = t % capacity;
    const BoundedSlab s = carve_slab(scratch + w * slab_stride, capacity, k);
    s.keys[i] = -1;
    s.r[i] = 0.0;
    s.p[i] = 0.0;
  }
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("PPR CUDA kernel: ") + what + ": " + cudaGetErrorString(err));
  }
}

}  // namespace

void ppr_topk_cuda(const PprProblem& pb, const PprOptions& opt, int64_t capacity, int64_t num_warps,
                   void* scratch, int64_t* out_idx, float* out_val, int32_t* status,
                   int64_t* edge_pushes, uintptr_t stream_handle) {
  if (pb.num_sources == 0) return;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const int64_t stride = slab_bytes(capacity, opt.k);
  unsigned char* base = static_cast<unsigned char*>(scratch);

  const int64_t init_total = num_warps * capacity;
  const int init_blocks = static_cast<int>(std::min<int64_t>((init_total + 255) / 256, 65535));
  init_slabs_kernel<<<init_blocks, 256, 0, stream>>>(base, stride, num_warps, capacity, opt.k);
  check_cuda(cudaGetLastError(), "slab initialisation launch");

  const int64_t blocks = (num_warps + kWarpsPerBlock - 1) / kWarpsPerBlock;  // num_warps <= 2^14 (caller)
  const dim3 grid(static_cast<unsigned>(blocks));
  const dim3 block(kWarpsPerBlock * 32);
  if (pb.index_width == 4) {
    ppr_bounded_kernel<int32_t><<<grid, block, 0, stream>>>(
        pb.indptr, static_cast<const int32_t*>(pb.indices), pb.caller_ids, pb.sources, pb.num_sources,
        pb.candidates, opt, capacity, num_warps, base, stride, out_idx, out_val, status, edge_pushes);
  } else {
    ppr_bounded_kernel<int64_t><<<grid, block, 0, stream>>>(
        pb.indptr, static_cast<const int64_t*>(pb.indices), pb.caller_ids, pb.sources, pb.num_sources,
        pb.candidates, opt, capacity, num_warps, base, stride, out_idx, out_val, status, edge_pushes);
  }
  check_cuda(cudaGetLastError(), "push kernel launch");
}

}  // namespace ppr
}  // namespace mlaga
