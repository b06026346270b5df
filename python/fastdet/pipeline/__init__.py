"""The pipeline: a model and images in, detections out. The Detector reads images from any
source, runs the engine of a model it identifies (model_spec), and strings the ops around it, on
the host or as one GPU frame (gpu_pipeline), timing each stage (profiling)."""
