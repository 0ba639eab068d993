// The CUDA kernel's per-source algorithm (push_core.h: bounded_push_source) compiled for the host.
//
// SerialLanes runs the 32 lanes of a warp one after the other. Every shared update in the
// algorithm goes through the policy's atomics and every cross-lane read follows a sync(), so the
// serial order is one of the interleavings the warp may execute: CPU tests of this entry point
// test the kernel body (hashing, overflow, FIFO, per-lane top-k and merge, slab reset).
#include <cstdint>
#include <vector>

#include "common/errors.h"
#include "ppr/ppr.h"
#include "ppr/push_core.h"

namespace mlaga {
namespace ppr {

namespace {

struct SerialLanes {
  Cancel* cancel;
  bool stop() { return cancel->poll_if_due(); }  // the calling thread is the only one: it polls
  template <class F>
  void each(F&& f) {
    for (int lane = 0; lane < kLanes; ++lane) f(lane);
  }
  template <class F>
  void single(F&& f) {
    f();
  }
  void sync() {}
  template <typename T>
  T load(const T* p) {
    return *p;
  }
  template <typename T>
  void store(T* p, T v) {
    *p = v;
  }
  template <typename T>
  T add(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
  }
  int64_t cas(int64_t* p, int64_t expected, int64_t desired) {
    const int64_t old = *p;
    if (old == expected) *p = desired;
    return old;
  }
};

template <typename Index>
void run(const PprProblem& pb, const PprOptions& opt, int64_t capacity, Cancel& cancel, int64_t* out_idx,
         float* out_val, int32_t* status, int64_t* edge_pushes) {
  std::vector<unsigned char> slab_mem(static_cast<size_t>(slab_bytes(capacity, opt.k)) + 256, 0);
  // 256-byte alignment like a device allocation.
  unsigned char* base = slab_mem.data();
  base += (256 - reinterpret_cast<uintptr_t>(base) % 256) % 256;
  const BoundedSlab slab = carve_slab(base, capacity, opt.k);
  for (int64_t i = 0; i < capacity; ++i) slab.keys[i] = -1;
  BoundedControl ctl{};
  SerialLanes lanes{&cancel};
  for (int64_t i = 0; i < pb.num_sources; ++i) {
    status[i] = bounded_push_source(lanes, slab, ctl, capacity, pb.indptr,
                                    static_cast<const Index*>(pb.indices), pb.caller_ids, pb.candidates,
                                    pb.sources[i], opt, out_idx + i * opt.k, out_val + i * opt.k,
                                    edge_pushes + i);
    if (cancel.stop()) throw Cancelled{};
  }
}

}  // namespace

void check_capacity(int64_t capacity) {
  if (capacity < 2 || (capacity & (capacity - 1)) != 0 || capacity > (int64_t(1) << 30)) {
    value_error("table capacity must be a power of two in [2, 2^30], got ", capacity);
  }
}

int64_t bounded_scratch_bytes(int64_t capacity, int64_t k) {
  check_capacity(capacity);
  if (k < 1) value_error("k must be >= 1, got ", k);
  // slab_bytes in int64 is exact while 32 * k * 8 cannot overflow; the rest is bounded by capacity.
  const double approx = 40.0 * static_cast<double>(capacity) + 12.0 * kLanes * static_cast<double>(k) + 2048.0;
  if (approx >= 9.0e18) {
    value_error("k = ", k, " with capacity = ", capacity, " needs about ", approx,
                " bytes of scratch per warp, which does not fit in int64; lower k");
  }
  return slab_bytes(capacity, k);
}

void ppr_topk_bounded_host(const PprProblem& pb, const PprOptions& opt, int64_t capacity, Cancel& cancel,
                           int64_t* out_idx, float* out_val, int32_t* status, int64_t* edge_pushes) {
  if (pb.index_width == 4) {
    run<int32_t>(pb, opt, capacity, cancel, out_idx, out_val, status, edge_pushes);
  } else {
    run<int64_t>(pb, opt, capacity, cancel, out_idx, out_val, status, edge_pushes);
  }
}

}  // namespace ppr
}  // namespace mlaga
