// Personalized PageRank (PPR) by forward push: the contract shared by the CPU and CUDA kernels.
//
// Definition. For a graph with adjacency A (A[u][v] = number of stored edges u -> v, so duplicate
// edges act as weights and a self-loop is one edge u -> u), out-degree d(u) = sum_v A[u][v] and
// teleport probability alpha, the PPR vector of a source s is the row vector solving
//     pi_s = alpha * e_s + (1 - alpha) * pi_s * P,      P = D^-1 A.
// Dangling nodes (d(u) = 0, i.e. isolated nodes in an undirected graph) get P[u][u] = 1: the walk
// stays where it is until it teleports. Consequently an isolated source has pi_s = e_s exactly,
// and mass that reaches a dangling node settles there (the push does this in one step, exactly).
//
// Approximation (Andersen-Chung-Lang forward push, non-lazy). Keep p (settled) and r (residual),
// start p = 0, r = e_s. Pushing u moves alpha * r(u) into p(u) and (1 - alpha) * r(u) / d(u) to
// the residual of each out-neighbour (once per stored edge), then sets r(u) = 0. The invariant
// pi_s = p + sum_u r(u) pi_u holds throughout. The source is always pushed once; afterwards a node
// is pushed while r(u) >= eps * d(u) (dangling nodes: while r(u) > 0). At termination every
// r(u) < eps * d(u), and on an undirected graph (symmetric A), where d(u) pi_u(v) = d(v) pi_v(u),
//     0 <= pi_s(v) - p_s(v) = d(v) * sum_u (r(u) / d(u)) pi_v(u) < eps * d(v)   for every v
// (up to float64 rounding). Work per source: sum of d(u) over pushes <= 1 / (alpha * eps) + d(s);
// calls whose bound 1 / (alpha * eps) exceeds kMaxWorkPerSource are refused before any work.
//
// Top-k. Entries are ranked by their float32 value, descending, ties by the smaller node id (the
// caller's id, whatever order the kernel stores the graph in); only nodes with a positive float32
// value are returned; rows are padded with idx = -1, val = 0. The candidate mask restricts which
// nodes may be returned; it never changes the walk.
//
// Validation. Every kernel below trusts its PprProblem: the graph comes from a PprGraph
// (ppr_graph.h), which checked it once when it was built, and the sources and options are checked
// by PprGraph's query methods (check_options, internal_sources) before a kernel runs.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

namespace mlaga {
namespace ppr {

// 1e12 edge pushes is about 7 hours of one core at 40M edge pushes/s: beyond it alpha or eps is
// almost certainly a mistake (alpha = 1e-9, or a denormal eps), not a request.
constexpr double kMaxWorkPerSource = 1e12;

struct PprOptions {
  double alpha = 0.15;          // teleport probability, in (0, 1)
  double eps = 1e-4;            // push threshold per unit of degree, > 0
  int64_t k = 32;               // entries per row, >= 1
  bool exclude_source = true;   // never return the source itself
  int64_t num_threads = 0;      // OpenMP threads; 0 = OpenMP's default
  int workspace = 0;            // CPU scratch: 0 = auto (by N), 1 = dense N-sized arrays, 2 = hash table
};

// Totals over all sources, int64 so that billions of pushes never wrap.
struct PprStats {
  int64_t pushes = 0;       // node pushes
  int64_t edge_pushes = 0;  // residual updates along stored edges (sum of d(u) over pushes)
  int64_t touched = 0;      // nodes that received residual or mass, summed over sources
};

// Per-graph cache of CPU scratch (ppr_cpu.cpp): setting up a workspace is O(N), so a graph keeps
// the ones its calls used and later calls reuse them. Thread-safe.
class ScratchPool;
std::shared_ptr<ScratchPool> make_scratch_pool();

// What a kernel reads: a graph in the kernel's own ids (see PprGraph) plus one call's sources.
// Host pointers for the CPU kernels, device pointers for the CUDA one.
struct PprProblem {
  const int64_t* indptr = nullptr;    // [N + 1]
  const void* indices = nullptr;      // [nnz], int32 or int64
  int index_width = 8;                // 4 or 8 bytes
  int64_t num_nodes = 0;
  int64_t nnz = 0;
  const uint32_t* degree = nullptr;   // [N] d(v) (host kernels only)
  const uint64_t* dangling = nullptr; // [ceil(N / 64)] bit v = (d(v) == 0); nullptr when none is
  const int64_t* caller_ids = nullptr;  // [N] kernel id -> the caller's id; nullptr = the same ids
  const int64_t* sources = nullptr;   // [S] kernel ids
  int64_t num_sources = 0;
  const uint8_t* candidates = nullptr;  // [N] indexed by the CALLER's id (1 = may be returned), or nullptr
  ScratchPool* scratch = nullptr;       // the graph's CPU scratch cache, or nullptr (scratch per call)
};

// Cooperative cancellation of one call. Every thread polls stop() in its push loop; the calling
// thread (OpenMP's master) also runs `poll` at most every kPollInterval (the bindings pass one that
// takes the GIL and runs Python's signal handlers, so Ctrl-C stops a call within a fraction of a
// second). A stopped call throws Cancelled once every thread has left its loop.
class Cancel {
 public:
  static constexpr std::chrono::milliseconds kPollInterval{50};
  explicit Cancel(std::function<bool()> poll = {}) : poll_(std::move(poll)), last_(Clock::now()) {}
  bool stop() const { return flag_.load(std::memory_order_relaxed); }
  // Master thread only. Returns stop().
  bool poll_if_due() {
    if (poll_ && !stop()) {
      const auto now = Clock::now();
      if (now - last_ >= kPollInterval) {
        last_ = now;
        if (poll_()) flag_.store(true, std::memory_order_relaxed);
      }
    }
    return stop();
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::function<bool()> poll_;
  Clock::time_point last_;
  std::atomic<bool> flag_{false};
};

struct Cancelled {};  // thrown by a kernel whose Cancel was stopped

// CPU, OpenMP over sources. out_idx/out_val: [S, k].
PprStats ppr_topk_cpu(const PprProblem& pb, const PprOptions& opt, Cancel& cancel, int64_t* out_idx,
                      float* out_val);

// CPU, the settled vector p_s itself: out [S, N] float64, columns in the caller's ids (tests, small graphs).
PprStats ppr_dense_cpu(const PprProblem& pb, const PprOptions& opt, Cancel& cancel, double* out);

// The bounded-memory (hash table) algorithm of the CUDA kernel, compiled for the host and run
// one source at a time with 32 simulated lanes. Same outputs as the CUDA kernel: status[S]
// (0 = ok, 1 = the source overflowed its table; its row is then all padding) and edge_pushes[S].
// `capacity` is the table size (a power of two, checked by check_capacity); a source overflows
// when it touches more than capacity / 2 nodes.
void ppr_topk_bounded_host(const PprProblem& pb, const PprOptions& opt, int64_t capacity, Cancel& cancel,
                           int64_t* out_idx, float* out_val, int32_t* status, int64_t* edge_pushes);

// ValueError unless capacity is a power of two in [2, 2^30].
void check_capacity(int64_t capacity);

// Bytes of scratch one warp needs for a table of `capacity` slots and top-k size k. ValueError
// naming the parameter when capacity is not valid or the size does not fit in int64.
int64_t bounded_scratch_bytes(int64_t capacity, int64_t k);

#ifdef MLAGA_WITH_CUDA
// CUDA: one warp per source (a grid-stride loop over sources), each warp with its own bounded
// scratch slab inside `scratch` (num_warps * bounded_scratch_bytes(capacity, k) bytes, device).
// All pointers are device pointers; the graph is a PprGraph's device copy and the sources were
// checked on the host (ppr_graph_cuda.cu), so nothing is validated here. `stream` is a
// cudaStream_t passed as an integer. Errors from the launch raise RuntimeError.
void ppr_topk_cuda(const PprProblem& pb, const PprOptions& opt, int64_t capacity, int64_t num_warps,
                   void* scratch, int64_t* out_idx, float* out_val, int32_t* status,
                   int64_t* edge_pushes, uintptr_t stream);
#endif

}  // namespace ppr
}  // namespace mlaga
