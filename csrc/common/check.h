// Errors raised by the kernels. The bindings translate ValueError into Python's ValueError and
// CudaError into fastdet.CudaError; nothing in csrc aborts, prints or returns a sentinel.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

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

// Message pieces are appended without iostreams: a module that carries its own copy of
// libstdc++ (some toolchains link it statically) beside the process's shared one can crash
// formatting numbers through the other copy's locale facets (seen on the GPU machine).
inline void append(std::string& out, const char* text) { out += text; }
inline void append(std::string& out, const std::string& text) { out += text; }
inline void append(std::string& out, std::string_view text) { out += text; }
inline void append(std::string& out, char c) { out += c; }
inline void append(std::string& out, bool value) { out += value ? "1" : "0"; }

template <typename T>
void append(std::string& out, T value) {
  if constexpr (std::is_floating_point_v<T>) {
    char buffer[32];
    // %g is what an ostream writes by default (6 significant digits; nan, inf, -inf).
    const int n = std::snprintf(buffer, sizeof buffer, "%g", static_cast<double>(value));
    out.append(buffer, n > 0 ? size_t(n) : 0);
  } else {
    static_assert(std::is_integral_v<T>, "concat: unsupported message piece");
    out += std::to_string(value);
  }
}

template <typename... Args>
std::string concat(const Args&... args) {
  std::string out;
  (append(out, args), ...);
  return out;
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
