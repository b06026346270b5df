#include <cuda_runtime.h>

#include "runtime/cuda_device.h"

namespace fastdet {

bool built_with_cuda() { return true; }

int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return count;
}

}  // namespace fastdet
