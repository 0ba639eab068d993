// CPU forward push: OpenMP over sources, one workspace per thread. The problem comes from a
// PprGraph (validated once), so nothing is checked here.
//
// Why dense per-thread scratch: a source touches few nodes, but looking them up must be O(1) with
// no hashing in the inner loop. Each thread owns N-sized arrays (lazily committed, huge-page
// backed), kept by the graph between calls (ScratchPool), and resets only the nodes it touched, so
// the cost of a source is O(touched + edge pushes), never O(N). No allocation happens per source.
// On sparse graphs the push waits on memory: almost every edge lands on a node no other edge of
// the source touched, so each neighbour's record is one cache line (NodeState) and misses are kept
// in flight ahead of the loop (see push()).
// For very large N (auto from 2^24 nodes) a per-source hash table (HashWorkspace) replaces the
// N-sized arrays so that memory committed per thread follows the touched set, not N; it was
// slower on the 1M-node benchmark graph, hence not the default below that size.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <memory>
#include <mutex>
#include <vector>
#include <new>

#include "common/huge_array.h"
#include "ppr/ppr.h"
#include "ppr/push_core.h"

namespace mlaga {
namespace ppr {

namespace {

// What the push reads and writes for every edge, in one 16-byte record so that a neighbour costs
// one cache line: its residual, its degree (for the threshold eps * d) and its marks.
struct NodeState {
  double r;        // residual
  uint32_t deg;    // d(v), copied from the graph once per workspace
  uint32_t marks;  // kTouched | kPushed. Integer flags: arithmetic on r or p can never erase them.
};
constexpr uint32_t kTouched = 1;  // has state to reset (in touched_)
constexpr uint32_t kPushed = 2;   // was pushed, so may hold mass (in pushed_)

constexpr int64_t kPrefetch = 16;  // neighbour states requested ahead (8: 0.8x, 24 and 32: no better)
constexpr int64_t kHashWorkspaceMinNodes = int64_t(1) << 24;  // auto: hash table from 16.8M nodes
constexpr int64_t kCancelCheckEdges = int64_t(1) << 16;  // edge pushes between cancellation checks (~1 ms)

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

inline bool is_dangling(const uint64_t* bits, int64_t v) {
  return bits != nullptr && ((bits[v >> 6] >> (v & 63)) & 1u);
}

// The cancellation check of a push loop: the master thread may run the poll (signals), the others
// only read the flag.
inline bool should_stop(Cancel& cancel, bool master) { return master ? cancel.poll_if_due() : cancel.stop(); }

// One thread's scratch, kept by the graph between calls (ScratchPool) because filling in the
// degrees is O(N). Every array has N entries: a node is in `touched_` at most once per source (its
// kTouched mark) and in the FIFO ring at most once at a time (the enqueue rule). Between sources
// every r, p and mark is zero.
class Workspace {
 public:
  // Throws std::bad_alloc when the scratch cannot be mapped.
  Workspace(int64_t n, const uint32_t* degree)
      : n_(n), nodes_(static_cast<size_t>(n)), p_(static_cast<size_t>(n)), touched_(static_cast<size_t>(n)),
        pushed_(static_cast<size_t>(n)), queue_(static_cast<size_t>(n)), cand_(static_cast<size_t>(n)) {
    for (int64_t v = 0; v < n; ++v) nodes_[v].deg = degree[v];
  }

  // Forward push from `source`; leaves r/p filled for the touched nodes (see reset()). Returns
  // false when the call was cancelled midway (the state is then partial but reset() cleans it).
  template <typename Index>
  bool push(const PprProblem& pb, const Index* indices, int64_t source, const PprOptions& opt, Cancel& cancel,
            bool master) {
    const int64_t* indptr = pb.indptr;
    const double eps = opt.eps;
    int64_t head = 0, tail = 0, queued = 0;  // ring positions in [0, N); `queued` = its length
    int64_t next_check = edge_pushes_ + kCancelCheckEdges;
    nodes_[source].marks = kTouched;
    touched_[n_touched_++] = source;
    nodes_[source].r = 1.0;
    queue_[tail] = source;  // the source is always pushed once
    tail = (tail + 1 == n_) ? 0 : tail + 1;
    queued = 1;
    while (queued > 0) {
      if (edge_pushes_ >= next_check) {
        next_check = edge_pushes_ + kCancelCheckEdges;
        if (should_stop(cancel, master)) return false;
      }
      const int64_t u = queue_[head];
      head = (head + 1 == n_) ? 0 : head + 1;
      --queued;
      // Keep misses in flight across rows (rows are short on sparse graphs, so in-row prefetch
      // alone starts late): the indptr entry three pops ahead, the adjacency lists, states and
      // settled masses of the next two queued nodes, and the first neighbour states of the next
      // one, whose row was requested one pop earlier. On the 1M-node power-law graph the
      // cross-row states gave 1.2x over in-row prefetch alone, the settled masses 1.15x more.
      if (queued > 3) __builtin_prefetch(&indptr[queue_[ring(head + 3)]], 0);
      for (int64_t j = 0; j < 2 && j < queued; ++j) {
        const int64_t nx = queue_[ring(head + j)];
        __builtin_prefetch(&indices[indptr[nx]], 0);
        __builtin_prefetch(&nodes_[nx], 1);
        __builtin_prefetch(&p_[nx], 1);
      }
      if (queued > 0) {
        const int64_t nx = queue_[head];
        const int64_t b = indptr[nx], e2 = std::min(indptr[nx + 1], b + kPrefetch);
        for (int64_t e = b; e < e2; ++e) __builtin_prefetch(&nodes_[static_cast<int64_t>(indices[e])], 1);
      }
      NodeState& nu = nodes_[u];
      const int64_t beg = indptr[u];
      const int64_t end = indptr[u + 1];
      const PushSplit split = push_split(opt.alpha, nu.r, end - beg);
      nu.r = 0.0;
      if (!(nu.marks & kPushed)) {  // first push of u: only pushed nodes hold mass
        nu.marks |= kPushed;
        pushed_[n_pushed_++] = u;
      }
      p_[u] += split.settle;
      ++pushes_;
      edge_pushes_ += end - beg;
      const double w = split.per_neighbour;
      for (int64_t e = beg; e < end; ++e) {
        // Neighbour states are random reads of an N-sized array; prefetching ahead overlaps the misses.
        if (e + kPrefetch < end) __builtin_prefetch(&nodes_[static_cast<int64_t>(indices[e + kPrefetch])], 1);
        const int64_t v = static_cast<int64_t>(indices[e]);
        NodeState& nv = nodes_[v];
        if (!(nv.marks & kTouched)) {
          nv.marks |= kTouched;
          touched_[n_touched_++] = v;
        }
        const double before = nv.r;
        const double after = before + w;
        nv.r = after;
        if (crossed(before, after, push_threshold(eps, nv.deg))) {
          queue_[tail] = v;
          tail = (tail + 1 == n_) ? 0 : tail + 1;
          ++queued;
        }
      }
    }
    touched_total_ += n_touched_;
    return true;
  }

  void topk(const PprProblem& pb, int64_t source, const PprOptions& opt, int64_t* out_idx, float* out_val) {
    int64_t m = 0;
    for (int64_t i = 0; i < n_pushed_; ++i) {  // usually far fewer than the touched nodes
      const int64_t v = pushed_[i];
      const float val = static_cast<float>(p_[v]);
      const int64_t id = caller_id(pb.caller_ids, v);
      if (returnable(val, v, source, opt.exclude_source, pb.candidates, id)) cand_[m++] = Candidate{val, id};
    }
    finish_topk(cand_.data(), m, opt.k, out_idx, out_val);
  }

  void write_dense(const PprProblem& pb, double* row) const {
    for (int64_t i = 0; i < n_pushed_; ++i) row[caller_id(pb.caller_ids, pushed_[i])] = p_[pushed_[i]];
  }

  void reset() {
    for (int64_t i = 0; i < n_touched_; ++i) {
      NodeState& ns = nodes_[touched_[i]];
      ns.r = 0.0;
      ns.marks = 0;
    }
    for (int64_t i = 0; i < n_pushed_; ++i) p_[pushed_[i]] = 0.0;
    n_touched_ = 0;
    n_pushed_ = 0;
  }

  int64_t pushes_ = 0, edge_pushes_ = 0, touched_total_ = 0;

 private:
  // Position i of the FIFO ring for i < 2N (no division in the loop).
  int64_t ring(int64_t i) const { return i >= n_ ? i - n_ : i; }

  int64_t n_;
  HugeArray<NodeState> nodes_;
  HugeArray<double> p_;         // settled mass, written only by pushes
  HugeArray<int64_t> touched_;  // every node with state to reset, once each
  HugeArray<int64_t> pushed_;   // the pushed ones among them (the only ones with mass)
  HugeArray<int64_t> queue_;    // FIFO ring
  HugeArray<Candidate> cand_;
  int64_t n_touched_ = 0;
  int64_t n_pushed_ = 0;
};

// Compact alternative for huge graphs: the touched nodes of one source live in an open-addressing
// table (node id, r, p) that starts at 4096 slots and doubles at load 1/2, so memory committed per
// thread follows the touched set, not N. Two N-sized-capacity buffers (lazily committed) let the
// table grow by rehashing into the other one; nothing is allocated per source. A slot's key is
// its mark, so no float value doubles as one.
class HashWorkspace {
 public:
  struct Slot {
    int64_t key;  // -1 = empty
    double r;
    double p;
  };
  static constexpr int64_t kInitialCapacity = 4096;

  // Throws std::bad_alloc when the scratch cannot be mapped.
  explicit HashWorkspace(int64_t n)
      : n_(n), max_cap_(capacity_for(n)), mem_a_(static_cast<size_t>(max_cap_)), mem_b_(static_cast<size_t>(max_cap_)),
        queue_(static_cast<size_t>(n)), cand_(static_cast<size_t>(n)) {
    tab_ = mem_a_.data();
    spare_ = mem_b_.data();
    cap_ = std::min(kInitialCapacity, max_cap_);
    clear_slots(tab_, cap_);
  }

  template <typename Index>
  bool push(const PprProblem& pb, const Index* indices, int64_t source, const PprOptions& opt, Cancel& cancel,
            bool master) {
    const int64_t* indptr = pb.indptr;
    int64_t head = 0, tail = 0, queued = 0;
    int64_t next_check = edge_pushes_ + kCancelCheckEdges;
    find_or_insert(source)->r = 1.0;
    queue_[tail] = source;  // the source is always pushed once
    tail = (tail + 1 == n_) ? 0 : tail + 1;
    queued = 1;
    while (queued > 0) {
      if (edge_pushes_ >= next_check) {
        next_check = edge_pushes_ + kCancelCheckEdges;
        if (should_stop(cancel, master)) return false;
      }
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
        if ((after >= opt.eps || is_dangling(pb.dangling, v)) &&
            crossed(before, after, push_threshold(opt.eps, pb.degree[v]))) {
          queue_[tail] = v;
          tail = (tail + 1 == n_) ? 0 : tail + 1;
          ++queued;
        }
      }
    }
    touched_total_ += size_;
    return true;
  }

  void topk(const PprProblem& pb, int64_t source, const PprOptions& opt, int64_t* out_idx, float* out_val) {
    int64_t m = 0;
    for (int64_t i = 0; i < cap_; ++i) {
      const Slot& sl = tab_[i];
      if (sl.key < 0) continue;
      const float val = static_cast<float>(sl.p);
      const int64_t id = caller_id(pb.caller_ids, sl.key);
      if (returnable(val, sl.key, source, opt.exclude_source, pb.candidates, id)) cand_[m++] = Candidate{val, id};
    }
    finish_topk(cand_.data(), m, opt.k, out_idx, out_val);
  }

  void write_dense(const PprProblem& pb, double* row) const {
    for (int64_t i = 0; i < cap_; ++i) {
      if (tab_[i].key >= 0) row[caller_id(pb.caller_ids, tab_[i].key)] = tab_[i].p;
    }
  }

  void reset() {
    clear_slots(tab_, cap_);
    cap_ = std::min(kInitialCapacity, max_cap_);
    size_ = 0;
  }

  int64_t pushes_ = 0, edge_pushes_ = 0, touched_total_ = 0;

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
  int64_t max_cap_;
  HugeArray<Slot> mem_a_, mem_b_;
  Slot* tab_ = nullptr;    // one of mem_a_ / mem_b_
  Slot* spare_ = nullptr;  // the other
  HugeArray<int64_t> queue_;
  HugeArray<Candidate> cand_;
  int64_t cap_ = 0;
  int64_t size_ = 0;
};

}  // namespace

class ScratchPool {
 public:
  // A clean workspace for this graph: a cached one, or a new one (std::bad_alloc when it cannot be mapped).
  std::unique_ptr<Workspace> take(const PprProblem& pb) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        std::unique_ptr<Workspace> ws = std::move(free_.back());
        free_.pop_back();
        return ws;
      }
    }
    return std::make_unique<Workspace>(pb.num_nodes, pb.degree);
  }
  void give(std::unique_ptr<Workspace> ws) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(ws));
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Workspace>> free_;
};

std::shared_ptr<ScratchPool> make_scratch_pool() { return std::make_shared<ScratchPool>(); }

namespace {

std::unique_ptr<Workspace> take_scratch(const PprProblem& pb, Workspace*) {
  return pb.scratch != nullptr ? pb.scratch->take(pb) : std::make_unique<Workspace>(pb.num_nodes, pb.degree);
}
std::unique_ptr<HashWorkspace> take_scratch(const PprProblem& pb, HashWorkspace*) {
  return std::make_unique<HashWorkspace>(pb.num_nodes);
}
void give_scratch(const PprProblem& pb, std::unique_ptr<Workspace> ws) {
  if (pb.scratch != nullptr && ws) pb.scratch->give(std::move(ws));
}
void give_scratch(const PprProblem&, std::unique_ptr<HashWorkspace>) {}

// Runs `per_source(ws, i)` for every source in parallel; sums the statistics. Throws Cancelled
// when `cancel` was stopped, std::bad_alloc when a thread could not get its scratch.
template <typename WS, typename Index, typename F>
PprStats run_parallel(const PprProblem& pb, const PprOptions& opt, Cancel& cancel, F per_source) {
  PprStats stats;
  if (pb.num_sources == 0) return stats;
  int64_t threads = opt.num_threads > 0 ? opt.num_threads : omp_get_max_threads();
  if (threads > pb.num_sources) threads = pb.num_sources;
  bool alloc_failed = false;
  std::atomic<int> finished{0};
#pragma omp parallel num_threads(static_cast<int>(threads)) reduction(|| : alloc_failed)
  {
    std::unique_ptr<WS> scratch;
    try {
      scratch = take_scratch(pb, static_cast<WS*>(nullptr));
    } catch (const std::bad_alloc&) {  // exceptions must not leave an OpenMP region
      alloc_failed = true;
    }
    const bool master = omp_get_thread_num() == 0;
    // Sources differ wildly in cost (a hub vs a leaf), hence dynamic scheduling.
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t i = 0; i < pb.num_sources; ++i) {
      if (!scratch || cancel.stop()) continue;
      WS& ws = *scratch;
      if (ws.push(pb, static_cast<const Index*>(pb.indices), pb.sources[i], opt, cancel, master)) per_source(ws, i);
      ws.reset();
      if (master) cancel.poll_if_due();
    }
    finished.fetch_add(1);
    // The master keeps polling (Ctrl-C) while other threads finish their last sources.
    if (master) {
      while (finished.load() < omp_get_num_threads()) {
        cancel.poll_if_due();
        struct timespec ts{0, 1000000};  // 1 ms
        nanosleep(&ts, nullptr);
      }
    }
#pragma omp critical
    if (scratch) {
      stats.pushes += scratch->pushes_;
      stats.edge_pushes += scratch->edge_pushes_;
      stats.touched += scratch->touched_total_;
      scratch->pushes_ = scratch->edge_pushes_ = scratch->touched_total_ = 0;
    }
    give_scratch(pb, std::move(scratch));
  }
  if (cancel.stop()) throw Cancelled{};
  if (alloc_failed) throw std::bad_alloc();
  return stats;
}

// Dense N-sized arrays while they fit in cache-friendly sizes; a compact hash table beyond.
inline int pick_workspace(const PprProblem& pb, const PprOptions& opt) {
  if (opt.workspace != 0) return opt.workspace;
  return pb.num_nodes >= kHashWorkspaceMinNodes ? 2 : 1;
}

template <typename Index>
PprStats topk_impl(const PprProblem& pb, const PprOptions& opt, Cancel& cancel, int64_t* out_idx, float* out_val) {
  const int64_t k = opt.k;
  auto body = [&](auto& ws, int64_t i) { ws.topk(pb, pb.sources[i], opt, out_idx + i * k, out_val + i * k); };
  if (pick_workspace(pb, opt) == 2) return run_parallel<HashWorkspace, Index>(pb, opt, cancel, body);
  return run_parallel<Workspace, Index>(pb, opt, cancel, body);
}

template <typename Index>
PprStats dense_impl(const PprProblem& pb, const PprOptions& opt, Cancel& cancel, double* out) {
  auto body = [&](auto& ws, int64_t i) { ws.write_dense(pb, out + i * pb.num_nodes); };
  if (pick_workspace(pb, opt) == 2) return run_parallel<HashWorkspace, Index>(pb, opt, cancel, body);
  return run_parallel<Workspace, Index>(pb, opt, cancel, body);
}

}  // namespace

PprStats ppr_topk_cpu(const PprProblem& pb, const PprOptions& opt, Cancel& cancel, int64_t* out_idx,
                      float* out_val) {
  if (pb.index_width == 4) return topk_impl<int32_t>(pb, opt, cancel, out_idx, out_val);
  return topk_impl<int64_t>(pb, opt, cancel, out_idx, out_val);
}

PprStats ppr_dense_cpu(const PprProblem& pb, const PprOptions& opt, Cancel& cancel, double* out) {
  if (pb.index_width == 4) return dense_impl<int32_t>(pb, opt, cancel, out);
  return dense_impl<int64_t>(pb, opt, cancel, out);
}

}  // namespace ppr
}  // namespace mlaga
