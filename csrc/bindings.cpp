// The one pybind11 module, mlaga_fast._C. It links no libtorch: arrays cross as NumPy buffers
// (CPU) or DLPack capsules (CUDA), so the wheel survives torch upgrades.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "common/arrays.h"
#include "graph/csr_canonical.h"
#include "graph/csr_check.h"
#include "runtime/runtime_info.h"

namespace py = pybind11;

namespace {

void check_csr_py(const py::array& indptr, const py::array& indices, int64_t num_nodes) {
  mlaga::require_int64_1d(indptr, "indptr");
  mlaga::require_1d_contiguous(indices, "indices");
  const int width = mlaga::index_width(indices, "indices");
  if (indptr.size() < 1) mlaga::value_error("indptr must have num_nodes + 1 >= 1 entries, got 0");
  const int64_t* ip = mlaga::data_of<int64_t>(indptr);
  const void* ix = indices.data();
  const int64_t n_indptr = indptr.size();
  const int64_t nnz = indices.size();
  py::gil_scoped_release release;
  mlaga::check_csr_raw(ip, n_indptr, ix, width, nnz, num_nodes);
}

// Checks the arrays once (memory safety, as check_csr) and returns their typed pointers.
struct Csr {
  const int64_t* indptr;
  const int64_t* indices;
};

Csr checked_int64_csr(const py::array& indptr, const py::array& indices, int64_t num_nodes) {
  mlaga::require_int64_1d(indptr, "indptr");
  mlaga::require_int64_1d(indices, "indices");
  if (indptr.size() < 1) mlaga::value_error("indptr must have num_nodes + 1 >= 1 entries, got 0");
  const int64_t* ip = mlaga::data_of<int64_t>(indptr);
  const int64_t* ix = mlaga::data_of<int64_t>(indices);
  {
    py::gil_scoped_release release;
    mlaga::check_csr_raw(ip, indptr.size(), ix, 8, indices.size(), num_nodes);
  }
  return {ip, ix};
}

py::tuple csr_violation_py(const py::array& indptr, const py::array& indices, int64_t num_nodes) {
  const Csr g = checked_int64_csr(indptr, indices, num_nodes);
  mlaga::CsrFinding f;
  {
    py::gil_scoped_release release;
    f = mlaga::find_csr_violation(g.indptr, g.indices, num_nodes);
  }
  return py::make_tuple(static_cast<int>(f.kind), f.index);
}

py::array_t<bool> csr_has_pairs_py(const py::array& indptr, const py::array& indices, int64_t num_nodes,
                                   const py::array& src, const py::array& dst) {
  const Csr g = checked_int64_csr(indptr, indices, num_nodes);
  mlaga::require_int64_1d(src, "src");
  mlaga::require_int64_1d(dst, "dst");
  if (src.size() != dst.size()) mlaga::value_error("src and dst must have the same length, got ", src.size(),
                                                   " and ", dst.size());
  py::array_t<bool> out(src.size());
  const int64_t* s = mlaga::data_of<int64_t>(src);
  const int64_t* d = mlaga::data_of<int64_t>(dst);
  bool* o = out.mutable_data();
  const int64_t m = src.size();
  {
    py::gil_scoped_release release;
    mlaga::csr_has_pairs(g.indptr, g.indices, num_nodes, s, d, m, o);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mlaga_fast compiled core (C++/OpenMP, optional CUDA); no libtorch dependency";
  m.def("check_csr", &check_csr_py, py::arg("indptr"), py::arg("indices"), py::arg("num_nodes"),
        "Validate a CSR graph: indptr int64 [N+1] monotone from 0 to len(indices); indices int32/int64 "
        "in [0, N). Raises ValueError naming the problem and the first bad index.");
  m.def("csr_violation", &csr_violation_py, py::arg("indptr"), py::arg("indices"), py::arg("num_nodes"),
        "check_csr, then the package conventions: (kind, index) of the first violation; kind 0 none, 1 self-loop, "
        "2 duplicate, 3 unsorted, 4 no reverse edge (int64 arrays; O(1) extra memory).");
  m.def("csr_has_pairs", &csr_has_pairs_py, py::arg("indptr"), py::arg("indices"), py::arg("num_nodes"),
        py::arg("src"), py::arg("dst"),
        "bool [M]: whether each (src[i], dst[i]) is stored in a CSR with sorted rows (int64 arrays).");
  m.def("_csr_checks_run", &mlaga::csr_checks_run,
        "How many graphs the CSR check has validated in this process (for tests that count validations).");
  m.def("built_with_cuda", &mlaga::built_with_cuda);
  m.def("cuda_device_count", &mlaga::cuda_device_count);
  m.def("cuda_status", &mlaga::cuda_status);
  m.def("openmp_max_threads", &mlaga::openmp_max_threads);
  mlaga::register_all(m);
}
