// CSR validation: the one check every graph passes before a kernel sees it.
//
// Contract for a graph with N nodes and E stored (directed) edges:
//   indptr  int64 [N + 1]: indptr[0] == 0, non-decreasing, indptr[N] == E
//   indices int32 or int64 [E]: every value in [0, N)
// Duplicates and self-loops are legal here (loaders report and remove them); this check is
// only about memory safety and well-formedness, so kernels may index without bounds checks.
// Failures throw std::invalid_argument (Python ValueError) naming the field and first bad index.
//
// Entry points: check_csr_raw (the `_C.check_csr` binding, on the caller's arrays) and
// copy_checked_indices (PprGraph, which validates the private copy it will use, so a caller
// mutating its arrays meanwhile can never slip an unchecked id past the check).
#pragma once
#include <cstdint>

namespace mlaga {

// ValueError unless indptr [n_indptr] is a valid row pointer for num_nodes nodes and nnz edges.
void check_indptr(const int64_t* indptr, int64_t n_indptr, int64_t num_nodes, int64_t nnz);

// Copies indices [nnz] (width 4 or 8 bytes) to `out` (int32 or int64, chosen by Out; nullptr =
// check only) in one parallel pass and throws ValueError naming the first entry outside [0, N).
// The check is made on the value that is stored, so a narrowing copy can never wrap silently.
template <typename Out>
void copy_checked_indices(const void* indices, int index_width, int64_t nnz, int64_t num_nodes, Out* out);

// Both checks on the caller's arrays; `indices` width is 4 or 8 bytes.
void check_csr_raw(const int64_t* indptr, int64_t n_indptr, const void* indices, int index_width,
                   int64_t nnz, int64_t num_nodes);

// How many graphs check_indptr has seen in this process (tests count validations with it).
int64_t csr_checks_run();

}  // namespace mlaga
