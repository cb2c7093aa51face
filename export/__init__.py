"""ONNX export of the merged detector, the bundle writer and parity checks."""
