#include "bindings/register.h"

namespace mlaga {

void register_ppr(pybind11::module_& m);  // csrc/ppr/ppr_bindings.cpp

void register_all(pybind11::module_& m) {
  (void)m;  // op families (e.g. PPR) add their register_* calls here
  register_ppr(m);
}

}  // namespace mlaga
