// What the build and the machine offer: never throws, so `import fastdet` works anywhere.
#pragma once

namespace fastdet {

// True when this build compiled the CUDA sources.
bool built_with_cuda();

// Number of visible CUDA devices; 0 without a CUDA build, a driver or a GPU.
int cuda_device_count() noexcept;

}  // namespace fastdet
