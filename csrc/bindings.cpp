// The one pybind11 module, mlaga_fast._C. It links no libtorch: arrays cross as NumPy buffers
// (CPU) or DLPack capsules (CUDA), so the wheel survives torch upgrades.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "common/arrays.h"
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

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mlaga_fast compiled core (C++/OpenMP, optional CUDA); no libtorch dependency";
  m.def("check_csr", &check_csr_py, py::arg("indptr"), py::arg("indices"), py::arg("num_nodes"),
        "Validate a CSR graph: indptr int64 [N+1] monotone from 0 to len(indices); indices int32/int64 "
        "in [0, N). Raises ValueError naming the problem and the first bad index.");
  m.def("_csr_checks_run", &mlaga::csr_checks_run,
        "How many graphs the CSR check has validated in this process (for tests that count validations).");
  m.def("built_with_cuda", &mlaga::built_with_cuda);
  m.def("cuda_device_count", &mlaga::cuda_device_count);
  m.def("cuda_status", &mlaga::cuda_status);
  m.def("openmp_max_threads", &mlaga::openmp_max_threads);
  mlaga::register_all(m);
}
