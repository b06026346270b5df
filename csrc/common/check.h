// Errors raised by the kernels. The bindings translate ValueError into Python's ValueError and
// CudaError into fastdet.CudaError; nothing in csrc aborts, prints or returns a sentinel.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace fastdet {

// Bad user input that slipped past the Python layer's validation.
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A failed CUDA call or kernel launch; the message names the call and file:line.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

}  // namespace fastdet

// FASTDET_CHECK(cond, "fn: argument x must be ...", value) throws fastdet::ValueError.
#define FASTDET_CHECK(cond, ...)                                           \
  do {                                                                     \
    if (!(cond)) {                                                         \
      throw ::fastdet::ValueError(::fastdet::detail::concat(__VA_ARGS__)); \
    }                                                                      \
  } while (0)
