// Push logic shared by the CPU kernel, the CUDA kernel and the host build of the CUDA algorithm.
//
// Everything here is __host__ __device__ (when compiled by nvcc) so that the arithmetic of a push,
// the enqueue rule, the ranking rule and the whole bounded-memory per-source algorithm are the
// same code on both sides. The bounded algorithm is written against a `Lanes` policy: on the GPU
// it is one warp (32 lanes running at once, atomics, __syncwarp); on the host it is the same 32
// lanes run one after the other (SerialLanes, in ppr_bounded_host.cpp), which is one legal
// interleaving of the warp, so CPU tests exercise the CUDA kernel's body. A policy provides
// each / single / sync, load / store / add / cas on shared words, and stop() (the host's
// cancellation; always false on the GPU).
#pragma once
#include <cstdint>

#include "ppr/ppr.h"

#if defined(__CUDACC__)
#define MLAGA_HD __host__ __device__ __forceinline__
#else
#define MLAGA_HD inline
#endif

namespace mlaga {
namespace ppr {

// Smallest positive double: the threshold of a dangling node, so that any positive residual
// reaching it is pushed (settled) rather than left behind.
constexpr double kDanglingThreshold = 4.9406564584124654e-324;

// Push threshold of a node of out-degree `deg`: push while r >= eps * deg.
MLAGA_HD double push_threshold(double eps, int64_t deg) {
  return deg > 0 ? eps * static_cast<double>(deg) : kDanglingThreshold;
}

// A node is enqueued exactly when an update lifts its residual from below to at-or-above its
// threshold. A queued node's residual only grows until it is popped (then it is reset to 0), so
// every node is in the queue at most once and r >= threshold implies "queued".
MLAGA_HD bool crossed(double before, double after, double threshold) {
  return before < threshold && after >= threshold;
}

struct PushSplit {
  double settle;         // added to p(u)
  double per_neighbour;  // added to r(v) once per stored edge u -> v
};

// One push of residual r at a node of out-degree deg. A dangling node keeps all of its mass
// (P[u][u] = 1): alpha * r + (1 - alpha) * alpha * r + ... = r settles at once.
MLAGA_HD PushSplit push_split(double alpha, double r, int64_t deg) {
  if (deg == 0) return PushSplit{r, 0.0};
  return PushSplit{alpha * r, (1.0 - alpha) * r / static_cast<double>(deg)};
}

// Output order: larger float32 value first, ties by the smaller id. Ranking on the float32 value
// (not the float64 one) keeps the returned rows exactly sorted by what the caller sees.
MLAGA_HD bool ranks_before(float val_a, int64_t id_a, float val_b, int64_t id_b) {
  return val_a > val_b || (val_a == val_b && id_a < id_b);
}

// The caller's id of kernel node v (the graph may be stored relabelled, see ppr_graph.h).
MLAGA_HD int64_t caller_id(const int64_t* caller_ids, int64_t v) { return caller_ids != nullptr ? caller_ids[v] : v; }

// A node may be returned when its value is positive, it is not an excluded source and the mask
// (indexed by the caller's id) allows it.
MLAGA_HD bool returnable(float val, int64_t v, int64_t source, bool exclude_source, const uint8_t* candidates,
                         int64_t caller) {
  if (!(val > 0.0f)) return false;
  if (exclude_source && v == source) return false;
  if (candidates != nullptr && candidates[caller] == 0) return false;
  return true;
}

template <typename Index>
MLAGA_HD int64_t degree_of(const int64_t* indptr, Index v) {
  return indptr[static_cast<int64_t>(v) + 1] - indptr[static_cast<int64_t>(v)];
}

// ---------------------------------------------------------------------------------------------
// Bounded-memory algorithm (the CUDA kernel's body). One source at a time per lane group.
//
// Per-group scratch, a slab of bounded_scratch_bytes(capacity, k) bytes:
//   keys  int64 [C]  node id in the slot, -1 = empty (open addressing, linear probing)
//   r, p  f64   [C]  residual and settled mass of the slot's node
//   queue int32 [C]  FIFO ring of slots to push (a slot is queued at most once at a time)
//   used  int32 [C]  slots claimed for this source, in claim order (to reset only those)
//   top   (int64 + f32) [32 * k]  one sorted top-k list per lane, merged by lane 0
// C is a power of two; a source that claims more than C / 2 slots overflows: its push stops, its
// row is written as padding and its status is 1, and the caller recomputes it on the CPU. The
// bound 0 <= pi - p < eps * d is thus never silently given up.
// ---------------------------------------------------------------------------------------------

constexpr int kLanes = 32;

struct BoundedSlab {
  int64_t* keys;
  double* r;
  double* p;
  int32_t* queue;
  int32_t* used;
  int64_t* top_ids;
  float* top_vals;
};

// Control words of one group: in shared memory on the GPU, on the stack on the host.
struct BoundedControl {
  int64_t head;
  int64_t tail;
  int64_t edge_pushes;
  int32_t n_used;
  int32_t overflow;
  int32_t top_len[kLanes];
};

MLAGA_HD int64_t align_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

MLAGA_HD int64_t slab_bytes(int64_t capacity, int64_t k) {
  int64_t b = 0;
  b += align_up(capacity * 8, 256) * 3;                 // keys, r, p
  b += align_up(capacity * 4, 256) * 2;                 // queue, used
  b += align_up(static_cast<int64_t>(kLanes) * k * 8, 256);  // top_ids
  b += align_up(static_cast<int64_t>(kLanes) * k * 4, 256);  // top_vals
  return b;
}

MLAGA_HD BoundedSlab carve_slab(unsigned char* base, int64_t capacity, int64_t k) {
  BoundedSlab s;
  int64_t off = 0;
  s.keys = reinterpret_cast<int64_t*>(base + off);
  off += align_up(capacity * 8, 256);
  s.r = reinterpret_cast<double*>(base + off);
  off += align_up(capacity * 8, 256);
  s.p = reinterpret_cast<double*>(base + off);
  off += align_up(capacity * 8, 256);
  s.queue = reinterpret_cast<int32_t*>(base + off);
  off += align_up(capacity * 4, 256);
  s.used = reinterpret_cast<int32_t*>(base + off);
  off += align_up(capacity * 4, 256);
  s.top_ids = reinterpret_cast<int64_t*>(base + off);
  off += align_up(static_cast<int64_t>(kLanes) * k * 8, 256);
  s.top_vals = reinterpret_cast<float*>(base + off);
  return s;
}

// Home slot of a node id: a multiplicative (Fibonacci) hash spreads consecutive ids.
MLAGA_HD int64_t home_slot(int64_t key, int64_t capacity) {
  const uint64_t h = static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull;
  return static_cast<int64_t>((h ^ (h >> 31)) & static_cast<uint64_t>(capacity - 1));
}

// Slot of node v, claiming an empty one if v is new; -1 when the table is past its load limit.
template <class Lanes>
MLAGA_HD int32_t find_or_insert(Lanes& L, const BoundedSlab& s, BoundedControl& ctl,
                                int64_t capacity, int64_t v) {
  int64_t h = home_slot(v, capacity);
  for (int64_t probe = 0; probe < capacity; ++probe) {
    const int64_t cur = L.load(&s.keys[h]);
    if (cur == v) return static_cast<int32_t>(h);
    if (cur == -1) {
      const int64_t prev = L.cas(&s.keys[h], int64_t(-1), v);
      if (prev == -1) {
        // Claimed. Every claimed slot is listed in `used` (even past the load limit) so that
        // the reset finds it; at most `capacity` slots exist, so the index stays in range.
        const int32_t idx = L.add(&ctl.n_used, int32_t(1));
        s.used[idx] = static_cast<int32_t>(h);
        if (idx >= capacity / 2) {
          L.store(&ctl.overflow, int32_t(1));
          return -1;
        }
        return static_cast<int32_t>(h);
      }
      if (prev == v) return static_cast<int32_t>(h);
    }
    h = (h + 1) & (capacity - 1);
  }
  L.store(&ctl.overflow, int32_t(1));
  return -1;
}

// Insert (val, id) into a lane's sorted list of at most k entries.
MLAGA_HD void lane_topk_insert(int64_t* ids, float* vals, int32_t& len, int64_t k, float val,
                               int64_t id) {
  if (len == k && !ranks_before(val, id, vals[len - 1], ids[len - 1])) return;
  int64_t pos = (len < k) ? len : k - 1;
  while (pos > 0 && ranks_before(val, id, vals[pos - 1], ids[pos - 1])) {
    ids[pos] = ids[pos - 1];
    vals[pos] = vals[pos - 1];
    --pos;
  }
  ids[pos] = id;
  vals[pos] = val;
  if (len < k) ++len;
}

// The whole computation for one source. The slab must be clean on entry (keys -1, r = p = 0) and
// is left clean. Returns the status (0 ok, 1 overflow); writes k entries to out_idx/out_val.
template <class Lanes, typename Index>
MLAGA_HD int32_t bounded_push_source(Lanes& L, const BoundedSlab& s, BoundedControl& ctl,
                                     int64_t capacity, const int64_t* indptr, const Index* indices,
                                     const int64_t* caller_ids, const uint8_t* candidates, int64_t source,
                                     const PprOptions& opt, int64_t* out_idx, float* out_val,
                                     int64_t* edge_pushes_out) {
  const int64_t k = opt.k;
  L.single([&]() {
    ctl.head = 0;
    ctl.tail = 0;
    ctl.edge_pushes = 0;
    ctl.n_used = 0;
    ctl.overflow = 0;
  });
  L.sync();
  L.single([&]() {
    const int32_t slot = find_or_insert(L, s, ctl, capacity, source);
    if (slot >= 0) {  // capacity >= 2 is checked by the callers, so this always succeeds
      s.r[slot] = 1.0;
      s.queue[0] = slot;  // the source is always pushed once
      ctl.tail = 1;
    }
  });
  L.sync();

  while (true) {
    if (L.load(&ctl.overflow) != 0 || L.load(&ctl.head) == L.load(&ctl.tail)) break;
    if (L.stop()) {  // cancelled (host only): report the row as unfinished, like an overflow
      L.single([&]() { L.store(&ctl.overflow, int32_t(1)); });
      L.sync();
      break;
    }
    const int32_t slot = L.load(&s.queue[L.load(&ctl.head) & (capacity - 1)]);
    const int64_t u = L.load(&s.keys[slot]);
    const double ru = L.load(&s.r[slot]);
    const int64_t beg = indptr[u];
    const int64_t end = indptr[u + 1];
    const PushSplit split = push_split(opt.alpha, ru, end - beg);
    L.sync();  // every lane has read the slot before lane 0 resets it
    L.single([&]() {
      s.r[slot] = 0.0;
      s.p[slot] += split.settle;
      ctl.head += 1;
      ctl.edge_pushes += end - beg;
    });
    L.sync();
    for (int64_t base = beg; base < end; base += kLanes) {
      L.each([&](int lane) {
        const int64_t e = base + lane;
        if (e >= end) return;
        const int64_t v = static_cast<int64_t>(indices[e]);
        const int32_t vs = find_or_insert(L, s, ctl, capacity, v);
        if (vs < 0) return;
        const double before = L.add(&s.r[vs], split.per_neighbour);
        const double after = before + split.per_neighbour;
        if (crossed(before, after, push_threshold(opt.eps, degree_of(indptr, v)))) {
          const int64_t pos = L.add(&ctl.tail, int64_t(1));
          s.queue[pos & (capacity - 1)] = vs;
        }
      });
      L.sync();
      if (L.load(&ctl.overflow) != 0) break;
    }
  }

  const int32_t status = L.load(&ctl.overflow) != 0 ? 1 : 0;
  const int32_t n_used_raw = L.load(&ctl.n_used);
  const int64_t n_used = n_used_raw < capacity ? n_used_raw : capacity;

  if (status == 0) {
    // Each lane keeps its own sorted top-k over a strided share of the claimed slots ...
    L.each([&](int lane) {
      int64_t* ids = s.top_ids + static_cast<int64_t>(lane) * k;
      float* vals = s.top_vals + static_cast<int64_t>(lane) * k;
      int32_t len = 0;
      for (int64_t i = lane; i < n_used; i += kLanes) {
        const int32_t slot = s.used[i];
        const int64_t v = L.load(&s.keys[slot]);
        const float val = static_cast<float>(L.load(&s.p[slot]));
        const int64_t id = caller_id(caller_ids, v);  // rank and return the caller's ids
        if (!returnable(val, v, source, opt.exclude_source, candidates, id)) continue;
        lane_topk_insert(ids, vals, len, k, val, id);
      }
      ctl.top_len[lane] = len;
    });
    L.sync();
    // ... and lane 0 merges the 32 sorted lists (k * 32 comparisons).
    L.single([&]() {
      int32_t cursor[kLanes];
      for (int l = 0; l < kLanes; ++l) cursor[l] = 0;
      for (int64_t j = 0; j < k; ++j) {
        int best = -1;
        for (int l = 0; l < kLanes; ++l) {
          if (cursor[l] >= ctl.top_len[l]) continue;
          const int64_t at = static_cast<int64_t>(l) * k + cursor[l];
          if (best < 0) {
            best = l;
            continue;
          }
          const int64_t bt = static_cast<int64_t>(best) * k + cursor[best];
          if (ranks_before(s.top_vals[at], s.top_ids[at], s.top_vals[bt], s.top_ids[bt])) best = l;
        }
        if (best < 0) {
          out_idx[j] = -1;
          out_val[j] = 0.0f;
        } else {
          const int64_t bt = static_cast<int64_t>(best) * k + cursor[best];
          out_idx[j] = s.top_ids[bt];
          out_val[j] = s.top_vals[bt];
          ++cursor[best];
        }
      }
      *edge_pushes_out = ctl.edge_pushes;
    });
  } else {
    L.each([&](int lane) {
      for (int64_t j = lane; j < k; j += kLanes) {
        out_idx[j] = -1;
        out_val[j] = 0.0f;
      }
    });
    L.single([&]() { *edge_pushes_out = ctl.edge_pushes; });
  }
  L.sync();
  // Leave the slab clean for the next source: only the claimed slots were written.
  L.each([&](int lane) {
    for (int64_t i = lane; i < n_used; i += kLanes) {
      const int32_t slot = s.used[i];
      s.keys[slot] = -1;
      s.r[slot] = 0.0;
      s.p[slot] = 0.0;
    }
  });
  L.sync();
  return status;
}

}  // namespace ppr
}  // namespace mlaga
