// What the compiled module can do on this machine; reported by `mlaga-fast info`.
#pragma once
#include <string>

namespace mlaga {

bool built_with_cuda();
// Number of usable CUDA devices; 0 without a driver or device (never throws).
int cuda_device_count();
// Why no device is usable ("" when one is), e.g. the CUDA runtime's error string.
std::string cuda_status();
int openmp_max_threads();

}  // namespace mlaga
