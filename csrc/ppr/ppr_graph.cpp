#include "ppr/ppr_graph.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "common/errors.h"
#include "graph/csr_check.h"

namespace mlaga {
namespace ppr {

namespace {

// Row v of the result is row caller_of[v] of `in`, neighbour order unchanged, ids relabelled.
template <typename Index>
void permute_rows(const int64_t* in_indptr, const Index* in, const int64_t* caller_of, const int64_t* kernel_of,
                  int64_t n, const int64_t* out_indptr, Index* out) {
#pragma omp parallel for schedule(dynamic, 4096)
  for (int64_t v = 0; v < n; ++v) {
    const int64_t old = caller_of[v];
    Index* dst = out + out_indptr[v];
    for (int64_t e = in_indptr[old]; e < in_indptr[old + 1]; ++e) *dst++ = static_cast<Index>(kernel_of[in[e]]);
  }
}

// Validated copy of the caller's neighbour ids in width Index, relabelled when an order is given
// (then indptr, caller_of and kernel_of are replaced by the relabelled graph's).
template <typename Index>
HugeArray<Index> build_indices(const void* indices, int index_width, int64_t nnz, int64_t n, HugeArray<int64_t>& indptr,
                               NodeOrder order, HugeArray<int64_t>& caller_of, HugeArray<int64_t>& kernel_of) {
  HugeArray<Index> copy(static_cast<size_t>(nnz));
  copy_checked_indices<Index>(indices, index_width, nnz, n, copy.data());
  if (order == NodeOrder::kNone) return copy;
  const std::vector<int64_t> perm = node_order(indptr.data(), copy.data(), sizeof(Index), n, order);
  caller_of = HugeArray<int64_t>(static_cast<size_t>(n));
  kernel_of = HugeArray<int64_t>(static_cast<size_t>(n));
  for (int64_t v = 0; v < n; ++v) {
    caller_of[v] = perm[v];
    kernel_of[perm[v]] = v;
  }
  HugeArray<int64_t> new_indptr(static_cast<size_t>(n + 1));
  for (int64_t v = 0; v < n; ++v) {
    new_indptr[v + 1] = new_indptr[v] + (indptr[caller_of[v] + 1] - indptr[caller_of[v]]);
  }
  HugeArray<Index> out(static_cast<size_t>(nnz));
  permute_rows(indptr.data(), copy.data(), caller_of.data(), kernel_of.data(), n, new_indptr.data(), out.data());
  indptr.swap(new_indptr);
  return out;
}

std::string human_bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int i = 0;
  while (b >= 1024.0 && i < 6) {
    b /= 1024.0;
    ++i;
  }
  std::ostringstream os;
  os.precision(b < 10 ? 2 : 0);
  os << std::fixed << b << " " << unit[i];
  return os.str();
}

}  // namespace

PprGraph::PprGraph(const int64_t* indptr, int64_t n_indptr, const void* indices, int index_width, int64_t nnz,
                   NodeOrder order)
    : n_(n_indptr - 1), nnz_(nnz), order_(order) {
  if (n_indptr < 1) value_error("indptr must have num_nodes + 1 >= 1 entries, got 0");
  // Copy first, then check the copy: what the kernels read is exactly what was validated.
  indptr_ = HugeArray<int64_t>(static_cast<size_t>(n_indptr));
  std::copy(indptr, indptr + n_indptr, indptr_.data());
  check_indptr(indptr_.data(), n_indptr, n_, nnz_);
  int64_t max_deg = 0;
#pragma omp parallel for reduction(max : max_deg) schedule(static)
  for (int64_t v = 0; v < n_; ++v) max_deg = std::max(max_deg, indptr_[v + 1] - indptr_[v]);
  if (max_deg > int64_t(std::numeric_limits<uint32_t>::max())) {
    value_error("a node has degree ", max_deg, " >= 2^32, more than the PPR kernels support");
  }
  width_ = n_ <= int64_t(std::numeric_limits<int32_t>::max()) ? 4 : 8;
  if (width_ == 4) {
    indices32_ = build_indices<int32_t>(indices, index_width, nnz_, n_, indptr_, order, caller_of_, kernel_of_);
  } else {
    indices64_ = build_indices<int64_t>(indices, index_width, nnz_, n_, indptr_, order, caller_of_, kernel_of_);
  }
  degree_ = HugeArray<uint32_t>(static_cast<size_t>(n_));
  bool any_dangling = false;
  for (int64_t v = 0; v < n_; ++v) {
    degree_[v] = static_cast<uint32_t>(indptr_[v + 1] - indptr_[v]);
    any_dangling = any_dangling || degree_[v] == 0;
  }
  if (any_dangling) {
    dangling_ = HugeArray<uint64_t>(static_cast<size_t>((n_ + 63) / 64));
    for (int64_t v = 0; v < n_; ++v) {
      if (degree_[v] == 0) dangling_[v >> 6] |= uint64_t(1) << (v & 63);
    }
  }
}

PprGraph::~PprGraph() = default;

int64_t PprGraph::memory_bytes() const {
  return static_cast<int64_t>(indptr_.size() * 8 + indices32_.size() * 4 + indices64_.size() * 8 +
                              degree_.size() * 4 + dangling_.size() * 8 + caller_of_.size() * 8 +
                              kernel_of_.size() * 8);
}

std::vector<int64_t> PprGraph::internal_sources(const int64_t* sources, int64_t num_sources) const {
  if (num_sources < 0) value_error("number of sources must be >= 0, got ", num_sources);
  std::vector<int64_t> out(static_cast<size_t>(num_sources));
  for (int64_t i = 0; i < num_sources; ++i) {
    const int64_t s = sources[i];
    if (s < 0 || s >= n_) value_error("sources[", i, "] = ", s, " is out of range [0, ", n_, ")");
    out[i] = kernel_of_.empty() ? s : kernel_of_[s];
  }
  return out;
}

PprProblem PprGraph::problem(const std::vector<int64_t>& sources, const uint8_t* candidates) const {
  PprProblem pb;
  pb.indptr = indptr_.data();
  pb.indices = width_ == 4 ? static_cast<const void*>(indices32_.data()) : static_cast<const void*>(indices64_.data());
  pb.index_width = width_;
  pb.num_nodes = n_;
  pb.nnz = nnz_;
  pb.degree = degree_.data();
  pb.dangling = dangling_.empty() ? nullptr : dangling_.data();
  pb.caller_ids = caller_of_.empty() ? nullptr : caller_of_.data();
  pb.sources = sources.data();
  pb.num_sources = static_cast<int64_t>(sources.size());
  pb.candidates = candidates;
  pb.scratch = scratch_.get();
  return pb;
}

int max_threads() { return std::max(64, 4 * omp_get_num_procs()); }

void check_options(const PprOptions& opt) {
  if (!(opt.alpha > 0.0 && opt.alpha < 1.0)) value_error("alpha must be in (0, 1), got ", opt.alpha);
  if (!(opt.eps > 0.0) || !std::isfinite(opt.eps)) value_error("eps must be a finite number > 0, got ", opt.eps);
  const double work = 1.0 / (opt.alpha * opt.eps);  // inf when alpha * eps underflows
  if (!(work <= kMaxWorkPerSource)) {
    value_error("alpha = ", opt.alpha, " and eps = ", opt.eps, " allow up to 1 / (alpha * eps) = ", work,
                " edge pushes per source, more than the limit of ", kMaxWorkPerSource,
                " (hours of work per source); raise alpha or eps");
  }
  if (opt.k < 1) value_error("k must be >= 1, got ", opt.k);
  if (opt.num_threads < 0 || opt.num_threads > max_threads()) {
    value_error("num_threads must be in [0, ", max_threads(), "] (0 = OpenMP's default; this machine has ",
                omp_get_num_procs(), " CPUs), got ", opt.num_threads);
  }
  if (opt.workspace < 0 || opt.workspace > 2) {
    value_error("workspace must be 0 (auto), 1 (dense) or 2 (hash), got ", opt.workspace);
  }
}

void check_fits_in_memory(double bytes, const std::string& what) {
  const double phys = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  if (bytes > phys) {
    value_error(what, " needs ", human_bytes(bytes), " of memory, more than this machine's ", human_bytes(phys));
  }
}

}  // namespace ppr
}  // namespace mlaga
