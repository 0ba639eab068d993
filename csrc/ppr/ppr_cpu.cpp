// CPU forward push: OpenMP over sources, one workspace per thread.
//
// Why dense per-thread scratch: a source touches few nodes, but looking them up must be O(1) with
// no hashing in the inner loop. Each thread owns r/p arrays of length N (allocated once per call
// as lazily committed, huge-page backed anonymous memory) and resets only the nodes it touched, so
// the cost of a source is O(touched + edge pushes), never O(N). No allocation happens per source.
// For very large N (auto from 2^24 nodes) a per-source hash table (HashWorkspace) replaces the
// N-sized arrays so that memory committed per thread follows the touched set, not N; it was
// slower on the 1M-node benchmark graph, hence not the default below that size.
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "common/errors.h"
#include "graph/csr_check.h"
#include "ppr/ppr.h"
#include "ppr/push_core.h"

namespace mlaga {
namespace ppr {

void validate_problem(const PprProblem& pb, const PprOptions& opt) {
  check_csr_raw(pb.indptr, pb.num_nodes + 1, pb.indices, pb.index_width, pb.nnz, pb.num_nodes);
  if (!(opt.alpha > 0.0 && opt.alpha < 1.0)) value_error("alpha must be in (0, 1), got ", opt.alpha);
  if (!(opt.eps > 0.0) || !std::isfinite(opt.eps)) value_error("eps must be a finite number > 0, got ", opt.eps);
  if (opt.k < 1) value_error("k must be >= 1, got ", opt.k);
  if (opt.num_threads < 0) value_error("num_threads must be >= 0 (0 = default), got ", opt.num_threads);
  if (pb.num_sources < 0) value_error("number of sources must be >= 0, got ", pb.num_sources);
  for (int64_t i = 0; i < pb.num_sources; ++i) {
    const int64_t s = pb.sources[i];
    if (s < 0 || s >= pb.num_nodes) {
      value_error("sources[", i, "] = ", s, " is out of range [0, ", pb.num_nodes, ")");
    }
  }
}

namespace {

// r: residual; p: settled mass. p == -0.0 (sign bit only) marks "touched, nothing settled yet",
// which keeps the touched flag in the same cache line as r without a third array.
struct NodeState {
  double r;
  double p;
};

constexpr int64_t kPrefetch = 8;  // edges ahead
constexpr int64_t kHashWorkspaceMinNodes = int64_t(1) << 24;  // auto: hash table from 16.8M nodes

inline bool untouched(const NodeState& ns) {
  uint64_t bits;
  std::memcpy(&bits, &ns.p, sizeof(bits));
  return bits == 0;
}

// Zeroed memory for N-sized scratch, backed by transparent huge pages where the kernel allows:
// the push reads these arrays at random, and with 4 KiB pages nearly every access would also miss
// the TLB. Anonymous mappings are zero-filled and committed lazily, page by page.
class HugeBuffer {
 public:
  explicit HugeBuffer(size_t bytes) {
    if (bytes == 0) bytes = 1;
    const size_t huge = size_t(2) << 20;
    size_ = (bytes + huge - 1) / huge * huge + huge;  // room to align the start to 2 MiB
    void* m = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return;
    base_ = m;
    const uintptr_t a = (reinterpret_cast<uintptr_t>(m) + huge - 1) / huge * huge;
    data_ = reinterpret_cast<void*>(a);
#ifdef MADV_HUGEPAGE
    madvise(data_, size_ - (a - reinterpret_cast<uintptr_t>(m)), MADV_HUGEPAGE);
#endif
  }
  ~HugeBuffer() {
    if (base_ != nullptr) munmap(base_, size_);
  }
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* base_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

struct Candidate {
  float val;
  int64_t id;
};

// Sorts the best k of m candidates into a padded output row.
inline void finish_topk(Candidate* cand, int64_t m, int64_t k, int64_t* out_idx, float* out_val) {
  auto before = [](const Candidate& a, const Candidate& b) { return ranks_before(a.val, a.id, b.val, b.id); };
  if (m > k) {
    std::nth_element(cand, cand + k, cand + m, before);
    m = k;
  }
  std::sort(cand, cand + m, before);
  for (int64_t j = 0; j < m; ++j) {
    out_idx[j] = cand[j].id;
    out_val[j] = cand[j].val;
  }
  for (int64_t j = m; j < k; ++j) {
    out_idx[j] = -1;
    out_val[j] = 0.0f;
  }
}

// One thread's scratch. Every array has N entries: a node is in `touched` at most once per source
// and in the FIFO ring at most once at a time.
class Workspace {
 public:
  Workspace(int64_t n, const double* threshold)
      : n_(n), threshold_(threshold), dangling_(nullptr), node_mem_(static_cast<size_t>(n) * sizeof(NodeState)) {
    const size_t cnt = static_cast<size_t>(n > 0 ? n : 1);
    nodes_ = node_mem_.as<NodeState>();
    touched_ = static_cast<int64_t*>(std::malloc(cnt * sizeof(int64_t)));
    pushed_ = static_cast<int64_t*>(std::malloc(cnt * sizeof(int64_t)));
    queue_ = static_cast<int64_t*>(std::malloc(cnt * sizeof(int64_t)));
    cand_ = static_cast<Candidate*>(std::malloc(cnt * sizeof(Candidate)));
  }
  ~Workspace() {
    std::free(touched_);
    std::free(pushed_);
    std::free(queue_);
    std::free(cand_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  bool ok() const { return nodes_ != nullptr && touched_ && pushed_ && queue_ && cand_; }

  // Forward push from `source`; leaves p/r filled for the touched nodes (see reset()).
  template <typename Index>
  void push(const int64_t* indptr, const Index* indices, int64_t source, const PprOptions& opt) {
    n_touched_ = 0;
    int64_t head = 0, tail = 0, queued = 0;  // ring positions in [0, N); `queued` = its length
    auto touch = [&](int64_t v) {
      NodeState& ns = nodes_[v];
      if (untouched(ns)) {
        ns.p = -0.0;
        touched_[n_touched_++] = v;
      }
    };
    touch(source);
    nodes_[source].r = 1.0;
    queue_[tail] = source;  // the source is always pushed once
    tail = (tail + 1 == n_) ? 0 : tail + 1;
    queued = 1;
    while (queued > 0) {
      const int64_t u = queue_[head];
      head = (head + 1 == n_) ? 0 : head + 1;
      --queued;
      // Warm the next queued nodes: the indptr entry three pops ahead, the adjacency lists and
      // states of the next two (rows are short on sparse graphs, so in-row prefetch alone starts
      // late); about 1.4x on the 1M-node power-law graph.
      if (queued > 3) __builtin_prefetch(&indptr[queue_[(head + 3) % n_]], 0);
      for (int64_t j = 0; j < 2 && j < queued; ++j) {
        const int64_t nx = queue_[(head + j) % n_];
        __builtin_prefetch(&indices[indptr[nx]], 0);
        __builtin_prefetch(&nodes_[nx], 1);
      }
      NodeState& nu = nodes_[u];
      const int64_t beg = indptr[u];
      const int64_t end = indptr[u + 1];
      const PushSplit split = push_split(opt.alpha, nu.r, end - beg);
      nu.r = 0.0;
      if (!(nu.p > 0.0)) pushed_[n_pushed_++] = u;  // first push: only pushed nodes hold mass
      nu.p += split.settle;
      ++pushes_;
      edge_pushes_ += end - beg;
      const double w = split.per_neighbour;
      for (int64_t e = beg; e < end; ++e) {
        // Neighbour states and degrees are random accesses into N-sized arrays; prefetching a few
        // edges ahead overlaps those cache misses.
        if (e + kPrefetch < end) {
          const int64_t ahead = static_cast<int64_t>(indices[e + kPrefetch]);
          __builtin_prefetch(&nodes_[ahead], 1);
        }
        const int64_t v = static_cast<int64_t>(indices[e]);
        touch(v);
        NodeState& nv = nodes_[v];
        const double before = nv.r;
        const double after = before + w;
        nv.r = after;
        // Every non-dangling threshold is >= eps, so a residual below eps cannot cross and the
        // threshold (a cache miss into an N-sized array) is read only for the rest. Dangling
        // nodes (threshold ~0) are found in a bitmap of N bits that stays in cache.
        if ((after >= opt.eps || (dangling_ != nullptr && ((dangling_[v >> 6] >> (v & 63)) & 1u))) &&
            crossed(before, after, threshold_[v])) {
          queue_[tail] = v;
          tail = (tail + 1 == n_) ? 0 : tail + 1;
          ++queued;
        }
      }
    }
    touched_total_ += n_touched_;
  }

  void topk(int64_t source, const PprOptions& opt, const uint8_t* candidates, int64_t* out_idx,
            float* out_val) {
    int64_t m = 0;
    for (int64_t i = 0; i < n_pushed_; ++i) {  // usually far fewer than the touched nodes
      const int64_t v = pushed_[i];
      const float val = static_cast<float>(nodes_[v].p);
      if (returnable(val, v, source, opt.exclude_source, candidates)) cand_[m++] = Candidate{val, v};
    }
    finish_topk(cand_, m, opt.k, out_idx, out_val);
  }

  void write_dense(double* row) const {
    for (int64_t i = 0; i < n_touched_; ++i) {
      const int64_t v = touched_[i];
      row[v] = nodes_[v].p + 0.0;  // -0.0 (touched, unsettled) becomes +0.0
    }
  }

  void reset() {
    for (int64_t i = 0; i < n_touched_; ++i) nodes_[touched_[i]] = NodeState{0.0, 0.0};
    n_touched_ = 0;
    n_pushed_ = 0;
  }

  int64_t pushes_ = 0, edge_pushes_ = 0, touched_total_ = 0;

 private:
  int64_t n_;
  const double* threshold_;  // [N] push_threshold(eps, d(v)), shared by all threads

 public:
  const uint64_t* dangling_;  // [ceil(N / 64)] bit v = (d(v) == 0), or nullptr when none is

 private:
  HugeBuffer node_mem_;
  NodeState* nodes_ = nullptr;
  int64_t* touched_ = nullptr;  // every node with state to reset, once each
  int64_t* pushed_ = nullptr;   // the pushed ones among them (the only ones with p > 0)
  int64_t* queue_ = nullptr;
  Candidate* cand_ = nullptr;
  int64_t n_touched_ = 0;
  int64_t n_pushed_ = 0;
};

// Compact alternative for large graphs: the touched nodes of one source live in an open-addressing
// table (node id, r, p) that starts at 4096 slots and doubles at load 1/2, so a typical source's
// working set stays in L1/L2 instead of being spread over N-sized arrays (one DRAM miss per edge).
// Two N-sized-capacity buffers (lazily committed) let the table grow by rehashing into the other
// one; nothing is allocated per source.
class HashWorkspace {
 public:
  struct Slot {
    int64_t key;  // -1 = empty
    double r;
    double p;
  };
  static constexpr int64_t kInitialCapacity = 4096;

  HashWorkspace(int64_t n, const double* threshold)
      : n_(n), threshold_(threshold), max_cap_(capacity_for(n)),
        mem_a_(static_cast<size_t>(max_cap_) * sizeof(Slot)), mem_b_(static_cast<size_t>(max_cap_) * sizeof(Slot)) {
    const size_t cnt = static_cast<size_t>(n > 0 ? n : 1);
    tab_ = mem_a_.as<Slot>();
    spare_ = mem_b_.as<Slot>();
    queue_ = static_cast<int64_t*>(std::malloc(cnt * sizeof(int64_t)));
    cand_ = static_cast<Candidate*>(std::malloc(cnt * sizeof(Candidate)));
    cap_ = std::min(kInitialCapacity, max_cap_);
    if (tab_ != nullptr) clear_slots(tab_, cap_);
  }
  ~HashWorkspace() {
    std::free(queue_);
    std::free(cand_);
  }
  HashWorkspace(const HashWorkspace&) = delete;
  HashWorkspace& operator=(const HashWorkspace&) = delete;
  bool ok() const { return tab_ != nullptr && spare_ != nullptr && queue_ && cand_; }

  template <typename Index>
  void push(const int64_t* indptr, const Index* indices, int64_t source, const PprOptions& opt) {
    int64_t head = 0, tail = 0, queued = 0;
    find_or_insert(source)->r = 1.0;
    queue_[tail] = source;  // the source is always pushed once
    tail = (tail + 1 == n_) ? 0 : tail + 1;
    queued = 1;
    while (queued > 0) {
      const int64_t u = queue_[head];
      head = (head + 1 == n_) ? 0 : head + 1;
      --queued;
      Slot* su = find_or_insert(u);
      const int64_t beg = indptr[u];
      const int64_t end = indptr[u + 1];
      const PushSplit split = push_split(opt.alpha, su->r, end - beg);
      su->r = 0.0;
      su->p += split.settle;
      ++pushes_;
      edge_pushes_ += end - beg;
      const double w = split.per_neighbour;
      for (int64_t e = beg; e < end; ++e) {
        const int64_t v = static_cast<int64_t>(indices[e]);
        Slot* sv = find_or_insert(v);
        const double before = sv->r;
        const double after = before + w;
        sv->r = after;
        // As in Workspace: thresholds of non-dangling nodes are >= eps.
        if ((after >= opt.eps || (dangling_ != nullptr && ((dangling_[v >> 6] >> (v & 63)) & 1u))) &&
            crossed(before, after, threshold_[v])) {
          queue_[tail] = v;
          tail = (tail + 1 == n_) ? 0 : tail + 1;
          ++queued;
        }
      }
    }
    touched_total_ += size_;
  }

  void topk(int64_t source, const PprOptions& opt, const uint8_t* candidates, int64_t* out_idx,
            float* out_val) {
    int64_t m = 0;
    for (int64_t i = 0; i < cap_; ++i) {
      const Slot& sl = tab_[i];
      if (sl.key < 0) continue;
      const float val = static_cast<float>(sl.p);
      if (returnable(val, sl.key, source, opt.exclude_source, candidates)) cand_[m++] = Candidate{val, sl.key};
    }
    finish_topk(cand_, m, opt.k, out_idx, out_val);
  }

  void write_dense(double* row) const {
    for (int64_t i = 0; i < cap_; ++i) {
      if (tab_[i].key >= 0) row[tab_[i].key] = tab_[i].p;
    }
  }

  void reset() {
    clear_slots(tab_, cap_);
    cap_ = std::min(kInitialCapacity, max_cap_);
    size_ = 0;
  }

  int64_t pushes_ = 0, edge_pushes_ = 0, touched_total_ = 0;
  const uint64_t* dangling_ = nullptr;

 private:
  static int64_t capacity_for(int64_t n) {
    int64_t c = 2;
    while (c < 2 * n) c <<= 1;  // load <= 1/2 even with all N nodes touched
    return std::max<int64_t>(c, kInitialCapacity);
  }
  static void clear_slots(Slot* t, int64_t cap) {
    for (int64_t i = 0; i < cap; ++i) t[i] = Slot{-1, 0.0, 0.0};
  }
  static int64_t hash(int64_t key, int64_t mask) {
    const uint64_t h = static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull;
    return static_cast<int64_t>((h ^ (h >> 29)) & static_cast<uint64_t>(mask));
  }
  Slot* find_or_insert(int64_t key) {
    int64_t mask = cap_ - 1;
    int64_t h = hash(key, mask);
    while (true) {
      Slot& sl = tab_[h];
      if (sl.key == key) return &sl;
      if (sl.key < 0) break;
      h = (h + 1) & mask;
    }
    if (2 * (size_ + 1) > cap_) {
      grow();
      mask = cap_ - 1;
      h = hash(key, mask);
      while (tab_[h].key >= 0) h = (h + 1) & mask;
    }
    ++size_;
    tab_[h].key = key;
    return &tab_[h];
  }
  void grow() {
    const int64_t ncap = cap_ * 2;  // never exceeds max_cap_: size_ < N <= max_cap_ / 2
    clear_slots(spare_, ncap);
    const int64_t mask = ncap - 1;
    for (int64_t i = 0; i < cap_; ++i) {
      if (tab_[i].key < 0) continue;
      int64_t h = hash(tab_[i].key, mask);
      while (spare_[h].key >= 0) h = (h + 1) & mask;
      spare_[h] = tab_[i];
    }
    clear_slots(tab_, cap_);  // keep the spare buffer's invariant: nothing stale beyond use
    std::swap(tab_, spare_);
    cap_ = ncap;
  }

  int64_t n_;
  const double* threshold_;
  int64_t max_cap_;
  HugeBuffer mem_a_, mem_b_;
  Slot* tab_ = nullptr;
  Slot* spare_ = nullptr;
  int64_t* queue_ = nullptr;
  Candidate* cand_ = nullptr;
  int64_t cap_ = 0;
  int64_t size_ = 0;
};

// Runs `per_source(ws, i)` for every source in parallel; sums the statistics.
template <typename WS, typename Index, typename F>
PprStats run_parallel(const PprProblem& pb, const PprOptions& opt, F per_source) {
  PprStats stats;
  if (pb.num_sources == 0) return stats;
  int threads = opt.num_threads > 0 ? opt.num_threads : omp_get_max_threads();
  if (threads > pb.num_sources) threads = static_cast<int>(pb.num_sources);
  // Thresholds once per call (O(N), parallel): one array read per edge instead of two indptr reads.
  HugeBuffer thr_mem(static_cast<size_t>(pb.num_nodes) * sizeof(double));
  double* thr = thr_mem.as<double>();
  if (thr == nullptr) throw std::bad_alloc();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t v = 0; v < pb.num_nodes; ++v) thr[v] = push_threshold(opt.eps, pb.indptr[v + 1] - pb.indptr[v]);
  // Dangling nodes as a bitmap (only when there are any).
  int64_t num_dangling = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : num_dangling)
  for (int64_t v = 0; v < pb.num_nodes; ++v) num_dangling += (pb.indptr[v + 1] == pb.indptr[v]) ? 1 : 0;
  std::vector<uint64_t> dangling_bits;
  if (num_dangling > 0) {
    dangling_bits.assign(static_cast<size_t>((pb.num_nodes + 63) / 64), 0);
    for (int64_t v = 0; v < pb.num_nodes; ++v) {
      if (pb.indptr[v + 1] == pb.indptr[v]) dangling_bits[v >> 6] |= uint64_t(1) << (v & 63);
    }
  }
  bool alloc_failed = false;
#pragma omp parallel num_threads(threads) reduction(|| : alloc_failed)
  {
    WS ws(pb.num_nodes, thr);
    ws.dangling_ = num_dangling > 0 ? dangling_bits.data() : nullptr;
    const bool ok = ws.ok();
    if (!ok) alloc_failed = true;
    // Sources differ wildly in cost (a hub vs a leaf), hence dynamic scheduling.
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < pb.num_sources; ++i) {
      if (!ok) continue;
      ws.push(pb.indptr, static_cast<const Index*>(pb.indices), pb.sources[i], opt);
      per_source(ws, i);
      ws.reset();
    }
#pragma omp critical
    {
      stats.pushes += ws.pushes_;
      stats.edge_pushes += ws.edge_pushes_;
      stats.touched += ws.touched_total_;
    }
  }
  if (alloc_failed) throw std::bad_alloc();
  return stats;
}

// Dense N-sized arrays while they fit in cache-friendly sizes; a compact hash table beyond.
inline int pick_workspace(const PprProblem& pb, const PprOptions& opt) {
  if (opt.workspace != 0) return opt.workspace;
  return pb.num_nodes >= kHashWorkspaceMinNodes ? 2 : 1;
}

template <typename Index>
PprStats topk_impl(const PprProblem& pb, const PprOptions& opt, int64_t* out_idx, float* out_val) {
  const int64_t k = opt.k;
  auto body = [&](auto& ws, int64_t i) {
    ws.topk(pb.sources[i], opt, pb.candidates, out_idx + i * k, out_val + i * k);
  };
  const int ws = pick_workspace(pb, opt);
  if (ws == 2) return run_parallel<HashWorkspace, Index>(pb, opt, body);
  return run_parallel<Workspace, Index>(pb, opt, body);
}

template <typename Index>
PprStats dense_impl(const PprProblem& pb, const PprOptions& opt, double* out) {
  auto body = [&](auto& ws, int64_t i) { ws.write_dense(out + i * pb.num_nodes); };
  const int ws = pick_workspace(pb, opt);
  if (ws == 2) return run_parallel<HashWorkspace, Index>(pb, opt, body);
  return run_parallel<Workspace, Index>(pb, opt, body);
}

}  // namespace
PprStats ppr_topk_cpu(const PprProblem& pb, const PprOptions& opt, int64_t* out_idx, float* out_val) {
  validate_problem(pb, opt);
  if (pb.index_width == 4) return topk_impl<int32_t>(pb, opt, out_idx, out_val);
  return topk_impl<int64_t>(pb, opt, out_idx, out_val);
}

PprStats ppr_dense_cpu(const PprProblem& pb, const PprOptions& opt, double* out) {
  validate_problem(pb, opt);
  if (pb.index_width == 4) return dense_impl<int32_t>(pb, opt, out);
  return dense_impl<int64_t>(pb, opt, out);
}

}  // namespace ppr
}  // namespace mlaga
