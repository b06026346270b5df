// FASTDET_CUDA_CHECK(call) and FASTDET_CUDA_CHECK_LAUNCH(kernel name): every CUDA runtime call
// and every kernel launch is checked; a failure throws fastdet::CudaError (fastdet.CudaError in
// Python) naming the call, the CUDA error and the file:line. Include only from CUDA sources.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "common/check.h"

namespace fastdet {
namespace detail {

// __FILE__ from "csrc/" on, so that messages do not depend on where the tree was built.
constexpr const char* source_path(const char* file) {
  const char* start = file;
  for (const char* p = file; *p; ++p) {
    if (p[0] == 'c' && p[1] == 's' && p[2] == 'r' && p[3] == 'c' && p[4] == '/') start = p;
  }
  return start;
}

[[noreturn]] inline void throw_cuda_error(cudaError_t error, const char* call, const char* file,
                                          int line) {
  throw CudaError(concat(call, " failed: ", cudaGetErrorName(error), " (",
                         cudaGetErrorString(error), ") at ", source_path(file), ":", line));
}

}  // namespace detail
}  // namespace fastdet

#define FASTDET_CUDA_CHECK(call)                                                            \
  do {                                                                                      \
    const cudaError_t fastdet_cuda_status_ = (call);                                        \
    if (fastdet_cuda_status_ != cudaSuccess) {                                              \
      ::fastdet::detail::throw_cuda_error(fastdet_cuda_status_, #call, __FILE__, __LINE__); \
    }                                                                                       \
  } while (0)

// After a <<<...>>> launch: a bad configuration shows up in cudaGetLastError at once.
#define FASTDET_CUDA_CHECK_LAUNCH(kernel)                                                      \
  do {                                                                                         \
    const cudaError_t fastdet_cuda_status_ = cudaGetLastError();                               \
    if (fastdet_cuda_status_ != cudaSuccess) {                                                 \
      ::fastdet::detail::throw_cuda_error(fastdet_cuda_status_, "launch of " kernel, __FILE__, \
                                          __LINE__);                                           \
    }                                                                                          \
  } while (0)
