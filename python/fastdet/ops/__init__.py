"""The ops: each family's preprocessing, decoding and NMS, on numpy arrays (the CPU kernels) or
GPU arrays (the CUDA kernels), and the Detections they produce. An op knows nothing of engines,
models or the pipeline that strings them together."""
