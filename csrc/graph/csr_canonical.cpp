#include "graph/csr_canonical.h"

#include <algorithm>
#include <limits>

namespace mlaga {

namespace {

inline bool row_has(const int64_t* indptr, const int64_t* indices, int64_t u, int64_t v) {
  const int64_t* lo = indices + indptr[u];
  const int64_t* hi = indices + indptr[u + 1];
  const int64_t* it = std::lower_bound(lo, hi, v);
  return it != hi && *it == v;
}

}  // namespace

CsrFinding find_csr_violation(const int64_t* indptr, const int64_t* indices, int64_t num_nodes) {
  const int64_t none = std::numeric_limits<int64_t>::max();
  int64_t loop = none, order = none;
  // Pass 1: self-loops and row order. Each finding is the smallest index of its kind (min-reduction).
#pragma omp parallel for schedule(static) reduction(min : loop, order)
  for (int64_t u = 0; u < num_nodes; ++u) {
    for (int64_t e = indptr[u]; e < indptr[u + 1]; ++e) {
      if (indices[e] == u && e < loop) loop = e;
      if (e > indptr[u] && indices[e] <= indices[e - 1] && e < order) order = e;
    }
  }
  if (loop != none) return {CsrViolation::kSelfLoop, loop};
  if (order != none) {
    const int64_t e = order;
    return {indices[e] == indices[e - 1] ? CsrViolation::kDuplicate : CsrViolation::kUnsorted, e};
  }
  // Pass 2 (rows are sorted now): every (u, v) must have (v, u).
  int64_t missing = none;
#pragma omp parallel for schedule(static) reduction(min : missing)
  for (int64_t u = 0; u < num_nodes; ++u) {
    for (int64_t e = indptr[u]; e < indptr[u + 1]; ++e) {
      if (e < missing && !row_has(indptr, indices, indices[e], u)) missing = e;
    }
  }
  if (missing != none) return {CsrViolation::kNoReverse, missing};
  return {CsrViolation::kNone, -1};
}

void csr_has_pairs(const int64_t* indptr, const int64_t* indices, int64_t num_nodes, const int64_t* src,
                   const int64_t* dst, int64_t m, bool* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    const int64_t u = src[i], v = dst[i];
    out[i] = u >= 0 && u < num_nodes && v >= 0 && v < num_nodes && row_has(indptr, indices, u, v);
  }
}

}  // namespace mlaga
