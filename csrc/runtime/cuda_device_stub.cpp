// CPU-only build (FASTDET_CUDA=OFF or no nvcc).
#include "runtime/cuda_device.h"

namespace fastdet {

bool built_with_cuda() { return false; }

int cuda_device_count() noexcept { return 0; }

}  // namespace fastdet
