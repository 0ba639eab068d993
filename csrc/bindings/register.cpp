#include "bindings/register.h"

namespace mlaga {

void register_all(pybind11::module_& m) {
  (void)m;  // op families (e.g. PPR) add their register_* calls here
}

}  // namespace mlaga
