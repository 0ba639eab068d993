// Node orders that improve memory locality of graph traversals, and the relabelled CSR.
//
// Why: the push reads the state of every neighbour it updates, at random positions of N-sized
// arrays. A relabelling that gives neighbours nearby ids makes those reads share cache lines and
// pages. Reverse Cuthill-McKee (RCM: breadth-first from a low-degree node, neighbours in increasing
// degree, the whole order reversed) is the classic bandwidth-reducing order; "degree" (hubs first)
// only packs the most-read nodes together.
//
// An order is returned as old_of_new [N]: position i of the new graph holds old node old_of_new[i].
// Every order is a pure function of the CSR (ties by the smaller id), so it is reproducible.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mlaga {

enum class NodeOrder { kNone = 0, kDegree = 1, kRcm = 2 };

// "none" | "degree" | "rcm"; anything else is a ValueError naming the choices.
NodeOrder parse_node_order(const std::string& name);
const char* node_order_name(NodeOrder order);

// old_of_new for `order` (empty for kNone). indptr [N + 1], indices [nnz] of width 4 or 8 bytes,
// already validated. Undirected graphs are the intended input; on a directed one RCM follows out-edges.
std::vector<int64_t> node_order(const int64_t* indptr, const void* indices, int index_width, int64_t num_nodes,
                                NodeOrder order);

}  // namespace mlaga
