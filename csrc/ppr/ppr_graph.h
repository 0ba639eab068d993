// PprGraph: the one place where a graph enters the PPR kernels.
//
// Built once from a caller's CSR, it
//   * validates it (graph/csr_check.h) -- the kernels never check again;
//   * keeps a private copy, so a caller that mutates or frees its arrays while a query runs (the
//     GIL is released) cannot crash the kernel or change its answer;
//   * stores it in the kernel's layout: 32-bit neighbour ids whenever N < 2^31 (half the bytes of
//     the adjacency stream), a uint32 degree array and a bitmap of dangling nodes;
//   * optionally relabels the nodes for memory locality (graph/node_order.h). Queries take and
//     return the caller's ids, and ties in the top-k are broken by the caller's ids, so the order
//     is invisible in the results: rows keep their neighbour order, so the push visits nodes in
//     exactly the same sequence and every value is bit-identical to the unordered graph.
// A PprGraph is immutable after construction and may be queried from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/huge_array.h"
#include "graph/node_order.h"
#include "ppr/ppr.h"

namespace mlaga {
namespace ppr {

struct DeviceGraph;  // a PprGraph's copy on one CUDA device (ppr_graph_cuda.cu)

class PprGraph {
 public:
  // indptr int64 [N + 1], indices [nnz] of 4 or 8 bytes per entry (host pointers, read only here).
  // Throws ValueError naming the first problem; a degree >= 2^32 is refused too.
  PprGraph(const int64_t* indptr, int64_t n_indptr, const void* indices, int index_width, int64_t nnz,
           NodeOrder order);
  ~PprGraph();
  PprGraph(const PprGraph&) = delete;
  PprGraph& operator=(const PprGraph&) = delete;

  int64_t num_nodes() const { return n_; }
  int64_t num_edges() const { return nnz_; }
  int index_width() const { return width_; }
  NodeOrder order() const { return order_; }
  int64_t memory_bytes() const;
  // kernel id -> caller id ([N]; empty when the order is the identity)
  const HugeArray<int64_t>& caller_ids() const { return caller_of_; }

  // Kernel ids of the caller's sources [S]; ValueError naming the first out-of-range entry.
  std::vector<int64_t> internal_sources(const int64_t* sources, int64_t num_sources) const;

  // The kernel's view for one call (sources in kernel ids, candidates in caller ids or nullptr).
  PprProblem problem(const std::vector<int64_t>& sources, const uint8_t* candidates) const;

#ifdef MLAGA_WITH_CUDA
  // This graph on CUDA device `device`, uploaded on first use and kept until the graph dies.
  const DeviceGraph& on_device(int device) const;
#endif

 private:
  int64_t n_ = 0;
  int64_t nnz_ = 0;
  int width_ = 4;
  NodeOrder order_ = NodeOrder::kNone;
  // Huge-page backed: the kernels read all of these at random.
  HugeArray<int64_t> indptr_;     // [N + 1]
  HugeArray<int32_t> indices32_;  // [nnz] when width_ == 4
  HugeArray<int64_t> indices64_;  // [nnz] when width_ == 8
  HugeArray<uint32_t> degree_;    // [N]
  HugeArray<uint64_t> dangling_;  // [ceil(N / 64)]; empty when no node is dangling
  HugeArray<int64_t> caller_of_;  // [N] kernel id -> caller id (empty: identity)
  HugeArray<int64_t> kernel_of_;  // [N] caller id -> kernel id (empty: identity)
  std::shared_ptr<ScratchPool> scratch_ = make_scratch_pool();  // CPU workspaces kept between calls
  mutable std::mutex device_mutex_;
  mutable std::vector<std::shared_ptr<DeviceGraph>> devices_;  // index = device ordinal
};

#ifdef MLAGA_WITH_CUDA
// One query on CUDA device `device` (ppr_graph_cuda.cu): uploads the sources (kernel ids from
// internal_sources) and the candidate mask (host [N] in caller ids, or nullptr), runs the kernel on
// `stream` and waits for it. Scratch and outputs are device pointers whose sizes the caller checked.
void topk_on_device(const PprGraph& g, const std::vector<int64_t>& sources, const uint8_t* candidates,
                    const PprOptions& opt, int64_t capacity, int64_t num_warps, int device, uintptr_t stream,
                    void* scratch, int64_t* out_idx, float* out_val, int32_t* status, int64_t* edge_pushes);
#endif

// ValueError naming the parameter unless alpha in (0, 1), eps finite and > 0, the work bound
// 1 / (alpha * eps) <= kMaxWorkPerSource, k >= 1 and num_threads in [0, max_threads()].
void check_options(const PprOptions& opt);

// Upper bound on num_threads: 4 x the CPUs OpenMP sees, at least 64 (more only adds overhead,
// and libgomp aborts the process when it cannot create the threads).
int max_threads();

// ValueError naming `what` when `bytes` exceed this machine's physical memory; called before
// anything that large is allocated (outputs [S, k], dense rows [S, N], bounded scratch).
void check_fits_in_memory(double bytes, const std::string& what);

}  // namespace ppr
}  // namespace mlaga
