"""edge_runtime's TensorRT modules import without tensorrt/pycuda (they are imported lazily)."""

from __future__ import annotations

import subprocess
import sys


def test_trt_modules_import_light():
    code = (
        "import sys, edge_runtime.trt.builder, edge_runtime.trt.runtime, edge_runtime.trt.calibrator, "
        "edge_runtime.trt.compat, edge_runtime.trt.calib_data, edge_runtime.commands.build_engine\n"
        "bad = [m for m in ('tensorrt', 'pycuda', 'torch', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
