#include "graph/node_order.h"

#include <algorithm>
#include <numeric>

#include "common/errors.h"

namespace mlaga {

NodeOrder parse_node_order(const std::string& name) {
  if (name == "none") return NodeOrder::kNone;
  if (name == "degree") return NodeOrder::kDegree;
  if (name == "rcm") return NodeOrder::kRcm;
  value_error("order must be 'none', 'degree' or 'rcm', got '", name, "'");
}

const char* node_order_name(NodeOrder order) {
  switch (order) {
    case NodeOrder::kDegree:
      return "degree";
    case NodeOrder::kRcm:
      return "rcm";
    default:
      return "none";
  }
}

namespace {

std::vector<int64_t> by_degree(const int64_t* indptr, int64_t n, bool descending) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), int64_t(0));
  auto deg = [indptr](int64_t v) { return indptr[v + 1] - indptr[v]; };
  if (descending) {
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return deg(a) > deg(b); });
  } else {
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return deg(a) < deg(b); });
  }
  return ids;
}

template <typename Index>
std::vector<int64_t> rcm(const int64_t* indptr, const Index* indices, int64_t n) {
  auto deg = [indptr](int64_t v) { return indptr[v + 1] - indptr[v]; };
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(n));
  std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
  // Each component starts at its lowest-degree node (ties: smaller id), as in the classic method.
  for (const int64_t start : by_degree(indptr, n, false)) {
    if (seen[start]) continue;
    seen[start] = 1;
    size_t head = order.size();
    order.push_back(start);
    while (head < order.size()) {
      const int64_t u = order[head++];
      const size_t first = order.size();
      for (int64_t e = indptr[u]; e < indptr[u + 1]; ++e) {
        const int64_t v = static_cast<int64_t>(indices[e]);
        if (!seen[v]) {
          seen[v] = 1;
          order.push_back(v);
        }
      }
      std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(first), order.end(),
                       [&](int64_t a, int64_t b) { return deg(a) < deg(b) || (deg(a) == deg(b) && a < b); });
    }
  }
  std::reverse(order.begin(), order.end());
  return order;
}

}  // namespace

std::vector<int64_t> node_order(const int64_t* indptr, const void* indices, int index_width, int64_t num_nodes,
                                NodeOrder order) {
  switch (order) {
    case NodeOrder::kDegree:
      return by_degree(indptr, num_nodes, true);
    case NodeOrder::kRcm:
      if (index_width == 4) return rcm(indptr, static_cast<const int32_t*>(indices), num_nodes);
      return rcm(indptr, static_cast<const int64_t*>(indices), num_nodes);
    default:
      return {};
  }
}

}  // namespace mlaga
