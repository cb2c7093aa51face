from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from calibration.calibration_set import SET_FILE, sample_calibration_set
from calibration.qdq import QuantConfig, calibrate_bundle, select_nodes
from edge_runtime.bundle import load_bundle
from edge_runtime.errors import BundleError, ConfigError

ATTENTION = ("/blocks.0/MatMul", "/blocks.0/MatMul_1", "/blocks.1/MatMul", "/blocks.1/MatMul_1")


@pytest.fixture(scope="module")
def calibrated(contract_bundle_src: Path, bottle: Path, tmp_path_factory: pytest.TempPathFactory):
    root = Path(shutil.copytree(contract_bundle_src, tmp_path_factory.mktemp("q") / "bundle"))
    calib = sample_calibration_set(bottle, 4, seed=1)
    out = calibrate_bundle(root, calib, QuantConfig(), progress=False)
    return root, calib, out


def _graph(path: Path):
    return onnx.load(str(path)).graph


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def test_int8_runs_on_cpu_close_to_fp32(calibrated) -> None:
    root, calib, out = calibrated
    bundle = load_bundle(root)
    feed = {
        "image": np.stack(list(calib.images(bundle.manifest.preprocess.image_size))),
        "text_embeddings": bundle.text_embeddings(),
    }
    fp32 = ort.InferenceSession(str(bundle.model_path("fp32")), providers=["CPUExecutionProvider"]).run(None, feed)
    int8 = ort.InferenceSession(str(bundle.model_path("int8")), providers=["CPUExecutionProvider"]).run(None, feed)
    assert int8[0].shape == fp32[0].shape == (4,) and int8[1].shape == fp32[1].shape
    assert np.max(np.abs(int8[0] - fp32[0])) < 0.05
    assert np.max(np.abs(int8[1] - fp32[1])) < 0.1
    assert out.score_drift_max == pytest.approx(float(np.max(np.abs(int8[0] - fp32[0]))), abs=1e-5)


def test_qdq_nodes_are_symmetric_int8(calibrated) -> None:
    root, _, _ = calibrated
    g = _graph(root / "model.int8.onnx")
    ops = [n.op_type for n in g.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    zero_points = [
        inits[n.input[2]] for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
    ]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # TensorRT: zero point 0


def test_only_weight_matmuls_are_quantized(calibrated) -> None:
    root, _, out = calibrated
    g = _graph(root / "model.int8.onnx")
    prod = _producers(g)

    def dq_inputs(node) -> list[str]:
        return [i for i in node.input if i in prod and prod[i].op_type == "DequantizeLinear"]

    nodes = {n.name: n for n in g.node}
    for name in ATTENTION:  # QK^T and attn*V stay float
        assert name in nodes and not dq_inputs(nodes[name]), name
    for layer in (0, 1):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
            node = nodes[f"/blocks.{layer}/{proj}/MatMul"]
            assert len(dq_inputs(node)) == 2, node.name  # activation and weight
    assert not dq_inputs(nodes["/visual_projection/MatMul"])  # final projection stays float
    assert set(out.result.selection.quantize) == {
        f"/blocks.{i}/{p}/MatMul" for i in (0, 1) for p in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    }


def test_layernorm_softmax_and_text_input_stay_float(calibrated, contract_bundle_src: Path) -> None:
    root, _, _ = calibrated
    g = _graph(root / "model.int8.onnx")
    prod = _producers(g)
    float_ops = [n for n in g.node if n.op_type in ("LayerNormalization", "Softmax")]
    ref = [n for n in _graph(contract_bundle_src / "model.onnx").node if n.op_type in ("LayerNormalization", "Softmax")]
    assert len(float_ops) == len(ref) > 0
    for n in float_ops:
        assert all(prod[i].op_type != "DequantizeLinear" for i in n.input if i in prod), n.name
    text = next(i for i in g.input if i.name == "text_embeddings")
    assert text.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "text_embeddings" for n in g.node)
    # Follow the text input through shape-only ops: it must reach its MatMul unquantized.
    frontier, seen = ["text_embeddings"], set()
    while frontier:
        t = frontier.pop()
        for n in g.node:
            if t in n.input and n.name not in seen:
                seen.add(n.name)
                assert n.op_type != "QuantizeLinear", f"text embeddings quantized at {n.name}"
                if n.op_type in ("Transpose", "Reshape", "Identity", "Cast"):
                    frontier.extend(n.output)


def test_manifest_lists_variant_and_verifies(calibrated) -> None:
    root, calib, _ = calibrated
    bundle = load_bundle(root, verify=True)
    (variant,) = [v for v in bundle.manifest.variants if v.precision == "int8"]
    assert variant.file == "model.int8.onnx"
    assert variant.calibration_set_sha256 == calib.sha256
    assert "QDQ" in variant.quantization and "per-channel" in variant.quantization
    assert {"model.int8.onnx", SET_FILE} <= set(bundle.manifest.files)
    record = json.loads((root / SET_FILE).read_text())
    assert record["sha256"] == calib.sha256 and [f["sha256"] for f in record["files"]] == list(calib.file_sha256)


def test_tampered_int8_model_is_refused(calibrated, tmp_path: Path) -> None:
    root = Path(shutil.copytree(calibrated[0], tmp_path / "b"))
    with open(root / "model.int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="model.int8.onnx"):
        load_bundle(root)


def test_recalibration_replaces_the_variant(contract_bundle: Path, bottle: Path) -> None:
    for seed in (0, 1):
        calib = sample_calibration_set(bottle, 2, seed=seed)
        calibrate_bundle(contract_bundle, calib, QuantConfig(method="percentile"), progress=False)
    variants = load_bundle(contract_bundle).manifest.variants
    assert len(variants) == 1 and variants[0].calibration_set_sha256 == calib.sha256


def test_selection_rules(contract_bundle_src: Path) -> None:
    model = onnx.load(str(contract_bundle_src / "model.onnx"))
    with_conv = select_nodes(model, QuantConfig(op_types=("MatMul", "Gemm", "Conv")))
    assert with_conv.excluded["/patch_embed/Conv"].startswith("stem")
    assert "/patch_embed/Conv" not in with_conv.quantize
    pattern = select_nodes(model, QuantConfig(exclude=("/blocks.1/*",)))
    assert not [n for n in pattern.quantize if n.startswith("/blocks.1/")]
    assert pattern.excluded["/blocks.1/fc1/MatMul"] == "excluded by pattern"
    keep_head = select_nodes(model, QuantConfig(keep_head_float=False))
    assert "/visual_projection/MatMul" in keep_head.quantize
    with pytest.raises(ConfigError, match="op_types"):
        QuantConfig(op_types=("Softmax",))


def test_recalibration_drops_engines_built_from_the_old_qdq_model(contract_bundle: Path, bottle: Path) -> None:
    from dataclasses import replace

    from edge_runtime.bundle import EngineEntry, with_file, write_manifest

    calibrate_bundle(contract_bundle, sample_calibration_set(bottle, 2, seed=0), QuantConfig(), progress=False)
    m = load_bundle(contract_bundle).manifest
    for name, src in (("model.int8.engine", "model.int8.onnx"), ("model.fp16.engine", "model.onnx")):
        (contract_bundle / name).write_bytes(b"engine bytes " + name.encode())
        m = with_file(
            replace(m, engines=m.engines + (EngineEntry(name, name.split(".")[1], src, "10.3.0", "Orin", "8.7"),)),
            contract_bundle,
            name,
        )
    write_manifest(contract_bundle, m)
    calibrate_bundle(contract_bundle, sample_calibration_set(bottle, 2, seed=1), QuantConfig(), progress=False)
    m = load_bundle(contract_bundle, verify=True).manifest
    assert [e.file for e in m.engines] == ["model.fp16.engine"]
    assert "model.int8.engine" not in m.files


def test_weight_behind_a_transpose_is_folded_and_quantized() -> None:
    """x @ Transpose(W) (as torch.onnx's dynamo exporter writes nn.Linear) is a weight MatMul."""
    from onnx import TensorProto, helper

    from calibration.qdq import fold_weight_transposes

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4)).astype(np.float32)  # [out, in], as nn.Linear stores it
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["w"], ["wt"], name="t", perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert select_nodes(model, QuantConfig(keep_head_float=False, keep_stem_float=False)).quantize == ()
    assert fold_weight_transposes(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    assert [t.name for t in model.graph.initializer] == ["wt"]
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), w.T)
    assert select_nodes(model, QuantConfig(keep_head_float=False, keep_stem_float=False)).quantize == ("mm",)
