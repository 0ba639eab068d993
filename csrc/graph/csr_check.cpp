#include "graph/csr_check.h"

#include <omp.h>

#include <algorithm>
#include <limits>

#include "common/errors.h"

namespace mlaga {

void check_indptr(const int64_t* indptr, int64_t n_indptr, int64_t num_nodes, int64_t nnz) {
  if (num_nodes < 0) value_error("num_nodes must be >= 0, got ", num_nodes);
  if (n_indptr != num_nodes + 1) {
    value_error("indptr must have num_nodes + 1 = ", num_nodes + 1, " entries, got ", n_indptr);
  }
  if (indptr[0] != 0) value_error("indptr[0] must be 0, got ", indptr[0]);
  // First decreasing position, found in parallel; the minimum over threads is the first one.
  int64_t first_bad = std::numeric_limits<int64_t>::max();
#pragma omp parallel for reduction(min : first_bad) schedule(static)
  for (int64_t i = 0; i < num_nodes; ++i) {
    if (indptr[i + 1] < indptr[i]) first_bad = std::min(first_bad, i + 1);
  }
  if (first_bad != std::numeric_limits<int64_t>::max()) {
    value_error("indptr must be non-decreasing: indptr[", first_bad, "] = ", indptr[first_bad],
                " < indptr[", first_bad - 1, "] = ", indptr[first_bad - 1]);
  }
  if (indptr[num_nodes] != nnz) {
    value_error("indptr[-1] must equal len(indices) = ", nnz, ", got ", indptr[num_nodes]);
  }
}

template <typename Index>
void check_indices(const Index* indices, int64_t nnz, int64_t num_nodes) {
  int64_t first_bad = std::numeric_limits<int64_t>::max();
#pragma omp parallel for reduction(min : first_bad) schedule(static)
  for (int64_t e = 0; e < nnz; ++e) {
    const int64_t v = static_cast<int64_t>(indices[e]);
    if (v < 0 || v >= num_nodes) first_bad = std::min(first_bad, e);
  }
  if (first_bad != std::numeric_limits<int64_t>::max()) {
    value_error("indices[", first_bad, "] = ", static_cast<int64_t>(indices[first_bad]),
                " is out of range [0, ", num_nodes, ")");
  }
}

template void check_indices<int32_t>(const int32_t*, int64_t, int64_t);
template void check_indices<int64_t>(const int64_t*, int64_t, int64_t);

void check_csr_raw(const int64_t* indptr, int64_t n_indptr, const void* indices, int index_width,
                   int64_t nnz, int64_t num_nodes) {
  check_indptr(indptr, n_indptr, num_nodes, nnz);
  if (index_width == 4) {
    check_indices(static_cast<const int32_t*>(indices), nnz, num_nodes);
  } else if (index_width == 8) {
    check_indices(static_cast<const int64_t*>(indices), nnz, num_nodes);
  } else {
    value_error("indices must be int32 or int64");
  }
}

}  // namespace mlaga
