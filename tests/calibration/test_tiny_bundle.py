"""The real export path: calibrate H3's tiny_bundle (an export of H1's merged tiny model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibration.calibration_set import sample_calibration_set
from calibration.precision_report import precision_report
from calibration.qdq import QuantConfig, calibrate_bundle
from edge_runtime.bundle import load_bundle


@pytest.fixture()
def exported(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def test_calibrate_exported_tiny_bundle(exported: Path, bottle: Path) -> None:
    calib = sample_calibration_set(bottle, 4, seed=0)
    out = calibrate_bundle(exported, calib, QuantConfig(), progress=False)
    bundle = load_bundle(exported, verify=True)
    assert bundle.model_path("int8").name == "model.int8.onnx"
    g = onnx.load(str(bundle.model_path("int8"))).graph
    prod = {o: n for n in g.node for o in n.output}
    ops = [n.op_type for n in g.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Standard ONNX only (TensorRT's parser), with the exported model's IR version.
    model = onnx.load(str(bundle.model_path("int8")))
    assert {n.domain for n in g.node} <= {"", "ai.onnx"}
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert model.ir_version == onnx.load(str(bundle.model_path("fp32"))).ir_version
    # Every MatMul fed by Q/DQ has a constant-weight side; activation x activation ones are float.
    quantized = [
        n
        for n in g.node
        if n.op_type in ("MatMul", "Gemm") and any(i in prod and prod[i].op_type == "DequantizeLinear" for i in n.input)
    ]
    assert quantized and len(quantized) == len(out.result.selection.quantize)
    for n in g.node:
        if n.op_type in ("LayerNormalization", "Softmax"):
            assert all(prod[i].op_type != "DequantizeLinear" for i in n.input if i in prod)
    for name in out.result.selection.excluded:
        node = next((n for n in g.node if n.name == name), None)
        if node is not None:
            assert not any(i in prod and prod[i].op_type == "DequantizeLinear" for i in node.input), name
    assert any(why == "activation x activation" for why in out.result.selection.excluded.values())

    feed = {"image": next(calib.batches(bundle.manifest.preprocess.image_size, 1))}
    if bundle.text_embeddings() is not None:
        feed["text_embeddings"] = bundle.text_embeddings()
    a = ort.InferenceSession(str(bundle.model_path("fp32")), providers=["CPUExecutionProvider"]).run(["score"], feed)[0]
    b = ort.InferenceSession(str(bundle.model_path("int8")), providers=["CPUExecutionProvider"]).run(["score"], feed)[0]
    assert np.all(np.isfinite(b)) and abs(float(a[0] - b[0])) < 0.05

    # ONNX Runtime CPU must run the quantized MatMuls as integer kernels: no float MatMul/Gemm
    # left reading a DequantizeLinear after its graph optimisations (that ran slower than FP32).
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(exported / "optimized.onnx")
    ort.InferenceSession(str(bundle.model_path("int8")), opts, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(exported / "optimized.onnx")).graph
    oprod = {o: n for n in opt.node for o in n.output}
    integer = [n for n in opt.node if n.op_type in ("QLinearMatMul", "MatMulIntegerToFloat", "QGemm")]
    assert len(integer) == len(out.result.selection.quantize)
    assert not [
        n.name
        for n in opt.node
        if n.op_type in ("MatMul", "Gemm")
        and any(i in oprod and oprod[i].op_type == "DequantizeLinear" for i in n.input)
    ]

    report = precision_report(exported, bottle, max_images=6, progress=False)
    assert [r.status for r in report.rows] == ["ok", "ok", "ok"]


def test_calibrate_baked_text_float_input_export(merged_tiny_dir: Path, bottle: Path, tmp_path: Path) -> None:
    """Export variants: text baked into the graph (the similarity MatMul now has a constant
    side and must still stay float) and float NCHW input (feeds normalised outside)."""
    from tests.plugins.bundles import export_tiny

    bundle = export_tiny(merged_tiny_dir, tmp_path / "baked", bake_text=True, float_input=True, dynamic_batch=True)
    assert bundle.text_embeddings() is None and bundle.manifest.preprocess.input_layout == "NCHW_float32"
    out = calibrate_bundle(bundle.root, sample_calibration_set(bottle, 3, seed=0), QuantConfig(), progress=False)
    assert out.score_drift_max < 0.05
    g = onnx.load(str(bundle.root / "model.int8.onnx")).graph
    prod = {o: n for n in g.node for o in n.output}
    assert all(i.name != "text_embeddings" for i in g.input)
    # The last MatMul before the outputs (similarity with the baked text) reads no DequantizeLinear.
    heads = [n for n, why in out.result.selection.excluded.items() if why.startswith("head")]
    assert heads
    for n in g.node:
        if n.name in heads:
            assert not any(i in prod and prod[i].op_type == "DequantizeLinear" for i in n.input), n.name
