// Each op family registers its Python entry points here, so bindings.cpp stays small.
#pragma once
#include <pybind11/pybind11.h>

namespace mlaga {

// Defined in csrc/bindings/register.cpp; calls each family's register_* function.
void register_all(pybind11::module_& m);

}  // namespace mlaga
