"""INT8 calibration: calibration image sets, ONNX Runtime Q/DQ quantization, precision report."""
