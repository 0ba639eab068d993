// Error helpers shared by every entry point. pybind11 translates std::invalid_argument
// into Python's ValueError, so every validation failure reaches the user as ValueError.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mlaga {

template <typename... Args>
[[noreturn]] inline void value_error(const Args&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

}  // namespace mlaga
