// Python entry points of the PPR kernels (mlaga_fast._C.ppr_*). The public, torch-aware API is
// mlaga_fast/ppr.py; these take NumPy arrays (CPU) or raw device pointers (CUDA).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "common/arrays.h"
#include "common/errors.h"
#include "ppr/ppr.h"

namespace mlaga {

namespace py = pybind11;

namespace {

using ppr::PprOptions;
using ppr::PprProblem;
using ppr::PprStats;

void require_int64(const py::array& a, const char* name) {
  if (a.dtype().kind() != 'i' || a.dtype().itemsize() != 8) {
    value_error(name, " must be int64, got dtype '", std::string(py::str(a.dtype())), "'");
  }
  require_1d_contiguous(a, name);
}

// Host problem from NumPy arrays; `candidates` is None or a bool/uint8 array of length N.
PprProblem host_problem(const py::array& indptr, const py::array& indices, const py::array& sources,
                        const py::object& candidates) {
  require_int64(indptr, "indptr");
  require_1d_contiguous(indices, "indices");
  const int width = index_width(indices, "indices");
  require_int64(sources, "sources");
  if (indptr.size() < 1) value_error("indptr must have num_nodes + 1 >= 1 entries, got 0");
  PprProblem pb;
  pb.indptr = data_of<int64_t>(indptr);
  pb.indices = indices.data();
  pb.index_width = width;
  pb.num_nodes = static_cast<int64_t>(indptr.size()) - 1;
  pb.nnz = static_cast<int64_t>(indices.size());
  pb.sources = data_of<int64_t>(sources);
  pb.num_sources = static_cast<int64_t>(sources.size());
  if (!candidates.is_none()) {
    py::array mask = candidates.cast<py::array>();
    const auto dt = mask.dtype();
    if (!((dt.kind() == 'b' || dt.kind() == 'u') && dt.itemsize() == 1)) {
      value_error("candidates must be a bool mask, got dtype '", std::string(py::str(dt)), "'");
    }
    require_1d_contiguous(mask, "candidates");
    if (static_cast<int64_t>(mask.size()) != pb.num_nodes) {
      value_error("candidates must have one entry per node (", pb.num_nodes, "), got ", mask.size());
    }
    pb.candidates = static_cast<const uint8_t*>(mask.data());
  }
  return pb;
}

PprOptions make_options(double alpha, double eps, int64_t k, bool exclude_source, int num_threads,
                        int workspace = 0) {
  if (workspace < 0 || workspace > 2) value_error("workspace must be 0 (auto), 1 (dense) or 2 (hash), got ", workspace);
  PprOptions opt;
  opt.workspace = workspace;
  opt.alpha = alpha;
  opt.eps = eps;
  opt.k = k;
  opt.exclude_source = exclude_source;
  opt.num_threads = num_threads;
  return opt;
}

py::dict stats_dict(const PprStats& st) {
  py::dict d;
  d["pushes"] = st.pushes;
  d["edge_pushes"] = st.edge_pushes;
  d["touched"] = st.touched;
  return d;
}

py::tuple topk_py(const py::array& indptr, const py::array& indices, const py::array& sources,
                  const py::object& candidates, double alpha, double eps, int64_t k,
                  bool exclude_source, int num_threads, int workspace) {
  const PprProblem pb = host_problem(indptr, indices, sources, candidates);
  if (k < 1) value_error("k must be >= 1, got ", k);
  py::array_t<int64_t> idx({pb.num_sources, k});
  py::array_t<float> val({pb.num_sources, k});
  int64_t* pi = idx.mutable_data();
  float* pv = val.mutable_data();
  const PprOptions opt = make_options(alpha, eps, k, exclude_source, num_threads, workspace);
  PprStats st;
  {
    py::gil_scoped_release release;
    st = ppr::ppr_topk_cpu(pb, opt, pi, pv);
  }
  return py::make_tuple(idx, val, stats_dict(st));
}

py::tuple dense_py(const py::array& indptr, const py::array& indices, const py::array& sources,
                   double alpha, double eps, int num_threads, int workspace) {
  const PprProblem pb = host_problem(indptr, indices, sources, py::none());
  py::array_t<double> out({pb.num_sources, pb.num_nodes});
  double* po = out.mutable_data();
  std::fill(po, po + pb.num_sources * pb.num_nodes, 0.0);
  const PprOptions opt = make_options(alpha, eps, 1, false, num_threads, workspace);
  PprStats st;
  {
    py::gil_scoped_release release;
    st = ppr::ppr_dense_cpu(pb, opt, po);
  }
  return py::make_tuple(out, stats_dict(st));
}

py::tuple bounded_host_py(const py::array& indptr, const py::array& indices, const py::array& sources,
                          const py::object& candidates, double alpha, double eps, int64_t k,
                          bool exclude_source, int64_t capacity) {
  const PprProblem pb = host_problem(indptr, indices, sources, candidates);
  if (k < 1) value_error("k must be >= 1, got ", k);
  py::array_t<int64_t> idx({pb.num_sources, k});
  py::array_t<float> val({pb.num_sources, k});
  py::array_t<int32_t> status(pb.num_sources);
  py::array_t<int64_t> edge_pushes(pb.num_sources);
  int64_t* pi = idx.mutable_data();
  float* pv = val.mutable_data();
  int32_t* ps = status.mutable_data();
  int64_t* pe = edge_pushes.mutable_data();
  const PprOptions opt = make_options(alpha, eps, k, exclude_source, 1);
  {
    py::gil_scoped_release release;
    ppr::ppr_topk_bounded_host(pb, opt, capacity, pi, pv, ps, pe);
  }
  return py::make_tuple(idx, val, status, edge_pushes);
}

#ifdef MLAGA_WITH_CUDA
void topk_cuda_py(uintptr_t indptr, uintptr_t indices, int index_width, int64_t num_nodes,
                  int64_t nnz, uintptr_t sources, int64_t num_sources, uintptr_t candidates,
                  double alpha, double eps, int64_t k, bool exclude_source, int64_t capacity,
                  int64_t num_warps, uintptr_t scratch, uintptr_t out_idx, uintptr_t out_val,
                  uintptr_t status, uintptr_t edge_pushes, uintptr_t stream) {
  if (index_width != 4 && index_width != 8) value_error("index_width must be 4 or 8, got ", index_width);
  PprProblem pb;
  pb.indptr = reinterpret_cast<const int64_t*>(indptr);
  pb.indices = reinterpret_cast<const void*>(indices);
  pb.index_width = index_width;
  pb.num_nodes = num_nodes;
  pb.nnz = nnz;
  pb.sources = reinterpret_cast<const int64_t*>(sources);
  pb.num_sources = num_sources;
  pb.candidates = reinterpret_cast<const uint8_t*>(candidates);  // 0 = no mask
  const PprOptions opt = make_options(alpha, eps, k, exclude_source, 0);
  py::gil_scoped_release release;
  ppr::ppr_topk_cuda(pb, opt, capacity, num_warps, reinterpret_cast<void*>(scratch),
                     reinterpret_cast<int64_t*>(out_idx), reinterpret_cast<float*>(out_val),
                     reinterpret_cast<int32_t*>(status), reinterpret_cast<int64_t*>(edge_pushes),
                     stream);
}
#endif

}  // namespace

void register_ppr(py::module_& m) {
  m.def("ppr_topk", &topk_py, py::arg("indptr"), py::arg("indices"), py::arg("sources"),
        py::arg("candidates"), py::arg("alpha"), py::arg("eps"), py::arg("k"),
        py::arg("exclude_source"), py::arg("num_threads"), py::arg("workspace") = 0,
        "Forward-push PPR top-k on the CPU (OpenMP over sources). Returns (idx int64 [S, k], "
        "val float32 [S, k], stats dict). See csrc/ppr/ppr.h for the definition and guarantee.");
  m.def("ppr_dense", &dense_py, py::arg("indptr"), py::arg("indices"), py::arg("sources"),
        py::arg("alpha"), py::arg("eps"), py::arg("num_threads"), py::arg("workspace") = 0,
        "Forward-push settled vectors p_s as float64 [S, N] (small graphs, tests).");
  m.def("ppr_topk_bounded_host", &bounded_host_py, py::arg("indptr"), py::arg("indices"),
        py::arg("sources"), py::arg("candidates"), py::arg("alpha"), py::arg("eps"), py::arg("k"),
        py::arg("exclude_source"), py::arg("capacity"),
        "The CUDA kernel's bounded hash-table algorithm run on the host (32 serial lanes). Returns "
        "(idx, val, status int32 [S] (1 = overflow, row is padding), edge_pushes int64 [S]).");
  m.def("ppr_bounded_scratch_bytes", &ppr::bounded_scratch_bytes, py::arg("capacity"), py::arg("k"),
        "Device bytes one warp's slab needs for a table of `capacity` slots and top-k size k.");
#ifdef MLAGA_WITH_CUDA
  m.def("ppr_topk_cuda", &topk_cuda_py, py::arg("indptr"), py::arg("indices"), py::arg("index_width"),
        py::arg("num_nodes"), py::arg("nnz"), py::arg("sources"), py::arg("num_sources"),
        py::arg("candidates"), py::arg("alpha"), py::arg("eps"), py::arg("k"),
        py::arg("exclude_source"), py::arg("capacity"), py::arg("num_warps"), py::arg("scratch"),
        py::arg("out_idx"), py::arg("out_val"), py::arg("status"), py::arg("edge_pushes"),
        py::arg("stream"),
        "Launch the CUDA push kernel on device pointers (validated by the caller) on `stream`.");
#endif
}

}  // namespace mlaga
