"""Fixtures for edge-runtime tests that must not need torch (hand-built ONNX bundles)."""
