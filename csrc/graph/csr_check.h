// CSR validation, shared by every entry point that takes a graph.
//
// Contract for a graph with N nodes and E stored (directed) edges:
//   indptr  int64 [N + 1]: indptr[0] == 0, non-decreasing, indptr[N] == E
//   indices int32 or int64 [E]: every value in [0, N)
// Duplicates and self-loops are legal here (loaders report and remove them); this check is
// only about memory safety and well-formedness, so kernels may index without bounds checks.
// Failures throw std::invalid_argument (Python ValueError) naming the field and first bad index.
#pragma once
#include <cstdint>

namespace mlaga {

void check_indptr(const int64_t* indptr, int64_t n_indptr, int64_t num_nodes, int64_t nnz);

template <typename Index>
void check_indices(const Index* indices, int64_t nnz, int64_t num_nodes);

// Both checks; `indices` width is 4 or 8 bytes.
void check_csr_raw(const int64_t* indptr, int64_t n_indptr, const void* indices, int index_width,
                   int64_t nnz, int64_t num_nodes);

}  // namespace mlaga
