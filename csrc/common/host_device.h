// Per-element math shared by the CPU and CUDA kernels is marked FASTDET_HOST_DEVICE.
#pragma once

#if defined(__CUDACC__)
#define FASTDET_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTDET_HOST_DEVICE inline
#endif
