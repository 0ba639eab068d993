#include "graph/csr_check.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <limits>

#include "common/errors.h"

namespace mlaga {

namespace {
std::atomic<int64_t> g_checks{0};
}  // namespace

int64_t csr_checks_run() { return g_checks.load(); }

void check_indptr(const int64_t* indptr, int64_t n_indptr, int64_t num_nodes, int64_t nnz) {
  g_checks.fetch_add(1);
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

namespace {

template <typename In, typename Out>
void copy_checked(const In* in, int64_t nnz, int64_t num_nodes, Out* out) {
  int64_t first_bad = std::numeric_limits<int64_t>::max();
  int64_t bad_value = 0;
#pragma omp parallel
  {
    int64_t mine = std::numeric_limits<int64_t>::max(), mine_value = 0;
#pragma omp for schedule(static) nowait
    for (int64_t e = 0; e < nnz; ++e) {
      const int64_t v = static_cast<int64_t>(in[e]);  // read once: what is checked is what is stored
      if (out != nullptr) out[e] = static_cast<Out>(v);
      if ((v < 0 || v >= num_nodes) && e < mine) {
        mine = e;
        mine_value = v;
      }
    }
#pragma omp critical
    if (mine < first_bad) {
      first_bad = mine;
      bad_value = mine_value;
    }
  }
  if (first_bad != std::numeric_limits<int64_t>::max()) {
    value_error("indices[", first_bad, "] = ", bad_value, " is out of range [0, ", num_nodes, ")");
  }
}

}  // namespace

template <typename Out>
void copy_checked_indices(const void* indices, int index_width, int64_t nnz, int64_t num_nodes, Out* out) {
  if (index_width == 4) {
    copy_checked(static_cast<const int32_t*>(indices), nnz, num_nodes, out);
  } else if (index_width == 8) {
    copy_checked(static_cast<const int64_t*>(indices), nnz, num_nodes, out);
  } else {
    value_error("indices must be int32 or int64");
  }
}

template void copy_checked_indices<int32_t>(const void*, int, int64_t, int64_t, int32_t*);
template void copy_checked_indices<int64_t>(const void*, int, int64_t, int64_t, int64_t*);

void check_csr_raw(const int64_t* indptr, int64_t n_indptr, const void* indices, int index_width,
                   int64_t nnz, int64_t num_nodes) {
  check_indptr(indptr, n_indptr, num_nodes, nnz);
  copy_checked_indices<int64_t>(indices, index_width, nnz, num_nodes, nullptr);
}

}  // namespace mlaga
