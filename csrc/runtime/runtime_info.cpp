#include "runtime/runtime_info.h"

#include <omp.h>

namespace mlaga {

int openmp_max_threads() { return omp_get_max_threads(); }

#ifndef MLAGA_WITH_CUDA
bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_status() { return "module built without CUDA"; }
#endif

}  // namespace mlaga
