// Python entry points of the PPR kernels (mlaga_fast._C). The public, torch-aware API is the
// mlaga_fast.ppr package (graph.py, core.py); this file binds
//   PprGraph(indptr, indices, order)   the validated private copy of ppr_graph.h, with the queries
//       .topk / .dense / .bounded_host  NumPy in, NumPy out, and, when built with CUDA,
//       ._topk_cuda                     outputs and scratch passed as DLPack capsules;
//   ppr_bounded_scratch_bytes(capacity, k).
// Every query checks its arguments here, then runs with the GIL released and stops on Ctrl-C.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/arrays.h"
#include "common/dlpack.h"
#include "common/errors.h"
#include "ppr/ppr.h"
#include "ppr/ppr_graph.h"

namespace mlaga {

namespace py = pybind11;

namespace {

using ppr::Cancel;
using ppr::PprGraph;
using ppr::PprOptions;
using ppr::PprProblem;
using ppr::PprStats;

// Largest grid of the CUDA kernel: enough warps to fill any current GPU many times over.
constexpr int64_t kMaxWarps = int64_t(1) << 20;

PprOptions make_options(double alpha, double eps, int64_t k, bool exclude_source, int64_t num_threads,
                        int64_t workspace) {
  if (workspace < 0 || workspace > 2) value_error("workspace must be 0 (auto), 1 (dense) or 2 (hash), got ", workspace);
  PprOptions opt;
  opt.alpha = alpha;
  opt.eps = eps;
  opt.k = k;
  opt.exclude_source = exclude_source;
  opt.num_threads = num_threads;
  opt.workspace = static_cast<int>(workspace);
  ppr::check_options(opt);
  return opt;
}

// A private copy of the candidate mask (bool/uint8 [N]), or an empty vector for None.
std::vector<uint8_t> mask_copy(const py::object& candidates, int64_t n) {
  if (candidates.is_none()) return {};
  if (!py::isinstance<py::array>(candidates)) value_error("candidates must be a NumPy bool mask or None");
  py::array mask = candidates.cast<py::array>();
  const auto dt = mask.dtype();
  if (!((dt.kind() == 'b' || dt.kind() == 'u') && dt.itemsize() == 1)) {
    value_error("candidates must be a bool mask, got dtype '", dtype_name(mask), "'");
  }
  require_1d_contiguous(mask, "candidates");
  if (static_cast<int64_t>(mask.size()) != n) {
    value_error("candidates must have one entry per node (", n, "), got ", mask.size());
  }
  const uint8_t* p = data_of<uint8_t>(mask);
  return std::vector<uint8_t>(p, p + n);
}

std::vector<int64_t> sources_of(const PprGraph& g, const py::array& sources) {
  require_int64_1d(sources, "sources");
  return g.internal_sources(data_of<int64_t>(sources), static_cast<int64_t>(sources.size()));
}

// A writable C-contiguous output array of `dtype` and shape [rows, cols]: the caller's `out` when
// given (checked), else a new one.
template <typename T>
py::array_t<T> output(const py::object& out, const char* name, int64_t rows, int64_t cols) {
  if (out.is_none()) return py::array_t<T>({rows, cols});
  if (!py::isinstance<py::array_t<T>>(out)) value_error(name, " must be a NumPy array of dtype ", py::str(py::dtype::of<T>()).cast<std::string>());
  py::array_t<T> arr = out.cast<py::array_t<T>>();
  require_native_order(arr, name);
  if (arr.ndim() != 2 || arr.shape(0) != rows || arr.shape(1) != cols) {
    value_error(name, " must have shape [", rows, ", ", cols, "]");
  }
  if (!(arr.flags() & py::array::c_style) || !arr.writeable()) value_error(name, " must be writable and C-contiguous");
  return arr;
}

// Runs `f(cancel)` with the GIL released. The kernel's master thread polls Python's signal
// handlers through `cancel`; when one raises (Ctrl-C: KeyboardInterrupt), the kernel stops and
// that exception propagates.
template <class F>
auto run_released(F&& f) -> decltype(f(std::declval<Cancel&>())) {
  Cancel cancel([]() {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  });
  try {
    py::gil_scoped_release release;
    return f(cancel);
  } catch (const ppr::Cancelled&) {
    throw py::error_already_set();
  }
}

py::dict stats_dict(const PprStats& st) {
  py::dict d;
  d["pushes"] = st.pushes;
  d["edge_pushes"] = st.edge_pushes;
  d["touched"] = st.touched;
  return d;
}

std::string output_what(int64_t s, int64_t k) {
  std::ostringstream os;
  os << "k = " << k << " for " << s << " sources: the [" << s << ", " << k << "] output (int64 ids + float32 values)";
  return os.str();
}

std::unique_ptr<PprGraph> make_graph(const py::array& indptr, const py::array& indices, const std::string& order) {
  require_int64_1d(indptr, "indptr");
  require_1d_contiguous(indices, "indices");
  const int width = index_width(indices, "indices");
  const NodeOrder o = parse_node_order(order);
  if (indptr.size() < 1) value_error("indptr must have num_nodes + 1 >= 1 entries, got 0");
  const int64_t* ip = data_of<int64_t>(indptr);
  const void* ix = indices.data();
  const int64_t n_indptr = static_cast<int64_t>(indptr.size());
  const int64_t nnz = static_cast<int64_t>(indices.size());
  py::gil_scoped_release release;  // the graph validates its own copy, so concurrent writes are harmless
  return std::make_unique<PprGraph>(ip, n_indptr, ix, width, nnz, o);
}

py::tuple topk_py(const PprGraph& g, const py::array& sources, const py::object& candidates, double alpha, double eps,
                  int64_t k, bool exclude_source, int64_t num_threads, int64_t workspace, const py::object& out_idx,
                  const py::object& out_val) {
  const PprOptions opt = make_options(alpha, eps, k, exclude_source, num_threads, workspace);
  const std::vector<int64_t> src = sources_of(g, sources);
  const std::vector<uint8_t> mask = mask_copy(candidates, g.num_nodes());
  const int64_t s = static_cast<int64_t>(src.size());
  if (out_idx.is_none() || out_val.is_none()) ppr::check_fits_in_memory(12.0 * double(s) * double(k), output_what(s, k));
  py::array_t<int64_t> idx = output<int64_t>(out_idx, "out_idx", s, k);
  py::array_t<float> val = output<float>(out_val, "out_val", s, k);
  int64_t* pi = idx.mutable_data();
  float* pv = val.mutable_data();
  const PprProblem pb = g.problem(src, mask.empty() ? nullptr : mask.data());
  const PprStats st = run_released([&](Cancel& c) { return ppr::ppr_topk_cpu(pb, opt, c, pi, pv); });
  return py::make_tuple(idx, val, stats_dict(st));
}

py::tuple dense_py(const PprGraph& g, const py::array& sources, double alpha, double eps, int64_t num_threads,
                   int64_t workspace) {
  const PprOptions opt = make_options(alpha, eps, 1, false, num_threads, workspace);
  const std::vector<int64_t> src = sources_of(g, sources);
  const int64_t s = static_cast<int64_t>(src.size()), n = g.num_nodes();
  ppr::check_fits_in_memory(8.0 * double(s) * double(n), "the dense output [S, N] float64");
  py::array_t<double> out({s, n});
  double* po = out.mutable_data();
  std::fill(po, po + s * n, 0.0);
  const PprProblem pb = g.problem(src, nullptr);
  const PprStats st = run_released([&](Cancel& c) { return ppr::ppr_dense_cpu(pb, opt, c, po); });
  return py::make_tuple(out, stats_dict(st));
}

py::tuple bounded_host_py(const PprGraph& g, const py::array& sources, const py::object& candidates, double alpha,
                          double eps, int64_t k, bool exclude_source, int64_t capacity) {
  const PprOptions opt = make_options(alpha, eps, k, exclude_source, 1, 0);
  const int64_t slab = ppr::bounded_scratch_bytes(capacity, k);  // checks capacity and overflow
  std::ostringstream what;
  what << "capacity = " << capacity << " with k = " << k << ": the bounded table";
  ppr::check_fits_in_memory(double(slab), what.str());
  const std::vector<int64_t> src = sources_of(g, sources);
  const std::vector<uint8_t> mask = mask_copy(candidates, g.num_nodes());
  const int64_t s = static_cast<int64_t>(src.size());
  ppr::check_fits_in_memory(12.0 * double(s) * double(k), output_what(s, k));
  py::array_t<int64_t> idx({s, k});
  py::array_t<float> val({s, k});
  py::array_t<int32_t> status(s);
  py::array_t<int64_t> edge_pushes(s);
  int64_t* pi = idx.mutable_data();
  float* pv = val.mutable_data();
  int32_t* ps = status.mutable_data();
  int64_t* pe = edge_pushes.mutable_data();
  const PprProblem pb = g.problem(src, mask.empty() ? nullptr : mask.data());
  run_released([&](Cancel& c) {
    ppr::ppr_topk_bounded_host(pb, opt, capacity, c, pi, pv, ps, pe);
    return 0;
  });
  return py::make_tuple(idx, val, status, edge_pushes);
}

#ifdef MLAGA_WITH_CUDA
void topk_cuda_py(const PprGraph& g, const py::array& sources, const py::object& candidates, double alpha, double eps,
                  int64_t k, bool exclude_source, int64_t capacity, int64_t num_warps, int64_t device,
                  uintptr_t stream, const py::object& scratch, const py::object& out_idx, const py::object& out_val,
                  const py::object& status, const py::object& edge_pushes) {
  const PprOptions opt = make_options(alpha, eps, k, exclude_source, 0, 0);
  const int64_t slab = ppr::bounded_scratch_bytes(capacity, k);
  if (num_warps < 1 || num_warps > kMaxWarps) value_error("num_warps must be in [1, ", kMaxWarps, "], got ", num_warps);
  if (device < 0 || device > 1 << 16) value_error("device must be a CUDA device index, got ", device);
  const std::vector<int64_t> src = sources_of(g, sources);
  const std::vector<uint8_t> mask = mask_copy(candidates, g.num_nodes());
  const int64_t s = static_cast<int64_t>(src.size());
  const int dev = static_cast<int>(device);
  void* scr = dl::cuda_data(scratch, "scratch", dev, dl::kUInt, 8, {-1});
  if (double(dl::length(scratch)) < double(slab) * double(num_warps)) {
    value_error("scratch must hold num_warps * ppr_bounded_scratch_bytes(capacity, k) = ", slab * num_warps, " bytes");
  }
  auto* pi = static_cast<int64_t*>(dl::cuda_data(out_idx, "out_idx", dev, dl::kInt, 64, {s, k}));
  auto* pv = static_cast<float*>(dl::cuda_data(out_val, "out_val", dev, dl::kFloat, 32, {s, k}));
  auto* ps = static_cast<int32_t*>(dl::cuda_data(status, "status", dev, dl::kInt, 32, {s}));
  auto* pe = static_cast<int64_t*>(dl::cuda_data(edge_pushes, "edge_pushes", dev, dl::kInt, 64, {s}));
  run_released([&](Cancel&) {
    ppr::topk_on_device(g, src, mask.empty() ? nullptr : mask.data(), opt, capacity, num_warps, dev, stream, scr,
                        pi, pv, ps, pe);
    return 0;
  });
}
#endif

py::array_t<int64_t> caller_ids_py(const PprGraph& g) {
  const auto& ids = g.caller_ids();
  py::array_t<int64_t> out(static_cast<py::ssize_t>(ids.size()));
  std::copy(ids.begin(), ids.end(), out.mutable_data());
  return out;
}

}  // namespace

void register_ppr(py::module_& m) {
  py::class_<PprGraph>(m, "PprGraph",
                       "A validated private copy of a CSR graph in the PPR kernels' layout (csrc/ppr/ppr_graph.h).")
      .def(py::init(&make_graph), py::arg("indptr"), py::arg("indices"), py::arg("order") = "none",
           "indptr int64 [N+1], indices int32/int64 [E] (NumPy, native byte order); order 'none' | 'degree' | "
           "'rcm'. Raises ValueError naming the first problem.")
      .def_property_readonly("num_nodes", &PprGraph::num_nodes)
      .def_property_readonly("num_edges", &PprGraph::num_edges)
      .def_property_readonly("index_width", &PprGraph::index_width)
      .def_property_readonly("order", [](const PprGraph& g) { return std::string(node_order_name(g.order())); })
      .def_property_readonly("memory_bytes", &PprGraph::memory_bytes)
      .def("caller_ids", &caller_ids_py, "kernel id -> caller id (empty when the order is the identity)")
      .def("topk", &topk_py, py::arg("sources"), py::arg("candidates"), py::arg("alpha"), py::arg("eps"), py::arg("k"),
           py::arg("exclude_source"), py::arg("num_threads"), py::arg("workspace") = 0, py::arg("out_idx") = py::none(),
           py::arg("out_val") = py::none(),
           "Forward-push PPR top-k on the CPU (OpenMP over sources). Returns (idx int64 [S, k], val float32 [S, k], "
           "stats dict), written into out_idx/out_val when given. See csrc/ppr/ppr.h.")
      .def("dense", &dense_py, py::arg("sources"), py::arg("alpha"), py::arg("eps"), py::arg("num_threads"),
           py::arg("workspace") = 0, "Settled vectors p_s as float64 [S, N] (small graphs, tests).")
      .def("bounded_host", &bounded_host_py, py::arg("sources"), py::arg("candidates"), py::arg("alpha"),
           py::arg("eps"), py::arg("k"), py::arg("exclude_source"), py::arg("capacity"),
           "The CUDA kernel's bounded hash-table algorithm run on the host (32 serial lanes). Returns (idx, val, "
           "status int32 [S] (1 = overflow, row is padding), edge_pushes int64 [S]).")
#ifdef MLAGA_WITH_CUDA
      .def("_topk_cuda", &topk_cuda_py, py::arg("sources"), py::arg("candidates"), py::arg("alpha"), py::arg("eps"),
           py::arg("k"), py::arg("exclude_source"), py::arg("capacity"), py::arg("num_warps"), py::arg("device"),
           py::arg("stream"), py::arg("scratch"), py::arg("out_idx"), py::arg("out_val"), py::arg("status"),
           py::arg("edge_pushes"),
           "Private: the CUDA kernel on this graph's device copy. Sources/candidates are host NumPy arrays; scratch "
           "and outputs are DLPack capsules checked here (device, dtype, shape). Waits for the kernel.")
#endif
      ;
  m.def("ppr_bounded_scratch_bytes", &ppr::bounded_scratch_bytes, py::arg("capacity"), py::arg("k"),
        "Bytes one warp's slab needs for a table of `capacity` slots and top-k size k (ValueError when the "
        "arguments are invalid or the size does not fit in int64).");
}

}  // namespace mlaga
