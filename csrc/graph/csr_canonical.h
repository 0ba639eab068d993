// The package's conventions for a graph beyond memory safety (csr_check.h): every row sorted,
// no duplicate entry, no self-loop, and symmetric (each stored edge (u, v) has its reverse (v, u)).
// Both functions use O(1) memory beyond their output, so a dataset's validation does not grow with
// E (the NumPy formulation built five E-long temporaries, about 450 MiB at 8M stored edges).
//
// Reference: the NumPy formulation the package used before, kept in benchmarks/bench_load.py (that
// benchmark's peer); tests/test_csr_canonical.py compares both on random and broken graphs.
// mlaga_fast/data/graph.py check_canonical_csr turns a finding into its message.
#pragma once
#include <cstdint>

namespace mlaga {

enum class CsrViolation : int { kNone = 0, kSelfLoop = 1, kDuplicate = 2, kUnsorted = 3, kNoReverse = 4 };

struct CsrFinding {
  CsrViolation kind;
  int64_t index;  // position in indices of the first violation of `kind`; -1 with kNone
};

// The first violation, by priority: any self-loop, then the first entry that is not strictly above
// its predecessor within its row, then the first entry whose reverse is not stored. The arrays must
// have passed check_csr_raw (ids in range, indptr monotone).
CsrFinding find_csr_violation(const int64_t* indptr, const int64_t* indices, int64_t num_nodes);

// out[i] = whether (src[i], dst[i]) is a stored entry of a canonical CSR (rows sorted); ids outside
// [0, N) are simply not edges. Binary search within row src[i]; parallel over pairs.
void csr_has_pairs(const int64_t* indptr, const int64_t* indices, int64_t num_nodes, const int64_t* src,
                   const int64_t* dst, int64_t m, bool* out);

}  // namespace mlaga
