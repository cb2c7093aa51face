"""TensorRT: engine build, INT8 calibrator, compatibility checks (imported lazily; needs tensorrt/pycuda)."""
