"""A torch-free, contract-conforming tiny bundle (hand-built ONNX) for the TensorRT tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.bundle import ModelVariant, PreprocessSpec, TensorSpec, load_bundle
from tests.plugins.edge import MODEL_FILES, write_test_manifest, write_text_embeddings

H = W = 16
PATCH = 4
D = 8
GRID = H // PATCH


def make_onnx(
    path: Path,
    *,
    dynamic_batch: bool = True,
    qdq: bool = False,
    seed: int = 0,
    bad_op: bool = False,
    float_input: bool = False,
) -> Path:
    """uint8 NHWC input with normalisation in the graph, or (`float_input`) normalised float32 NCHW."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    batch = "batch" if dynamic_batch else 1
    pre = PreprocessSpec(image_size=(H, W))
    w = rng.normal(0, 0.3, (D, 3, PATCH, PATCH)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
        numpy_helper.from_array(np.array(pre.mean, np.float32), "mean"),
        numpy_helper.from_array(np.array(pre.std, np.float32), "std"),
        numpy_helper.from_array(rng.normal(0, 0.1, D).astype(np.float32), "conv_b"),
        numpy_helper.from_array(np.array(10.0, np.float32), "logit_scale"),
        numpy_helper.from_array(np.array(1, np.int64), "abnormal_idx"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["x_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_f", "inv255"], ["x_s"]),
        helper.make_node("Sub", ["x_s", "mean"], ["x_c"]),
        helper.make_node("Div", ["x_c", "std"], ["x_n"]),
        helper.make_node("Transpose", ["x_n"], ["x_nchw"], perm=[0, 3, 1, 2]),
    ]
    if float_input:
        nodes = [helper.make_node("Identity", ["image"], ["x_nchw"])]
    conv_in, conv_w = "x_nchw", "conv_w"
    if qdq:
        scale = np.float32(np.abs(w).max() / 127)
        inits += [
            numpy_helper.from_array(np.clip(np.round(w / scale), -127, 127).astype(np.int8), "conv_w_q"),
            numpy_helper.from_array(np.array(scale, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zp"),
            numpy_helper.from_array(np.array(4.0 / 127, np.float32), "x_scale"),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", ["conv_w_q", "w_scale", "zp"], ["conv_w_dq"]),
            helper.make_node("QuantizeLinear", ["x_nchw", "x_scale", "zp"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "zp"], ["x_dq"]),
        ]
        conv_in, conv_w = "x_dq", "conv_w_dq"
    else:
        inits.append(numpy_helper.from_array(w, "conv_w"))
    nodes += [
        helper.make_node(
            "Conv", [conv_in, conv_w, "conv_b"], ["patches"], kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH]
        ),
        helper.make_node("Transpose", ["patches"], ["tokens"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["text_embeddings"], ["text_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["tokens", "text_t"], ["sim"]),
        helper.make_node("Mul", ["sim", "logit_scale"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("Gather", ["probs", "abnormal_idx"], ["anomaly_map"], axis=3),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2], keepdims=0),
    ]
    if bad_op:
        nodes.insert(0, helper.make_node("FancyOp", ["image"], ["unused1"], domain="com.example"))
        nodes.insert(1, helper.make_node("Mystery", ["image"], ["unused2"]))
    graph = helper.make_graph(
        nodes,
        "tiny_anomaly",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, H, W])
            if float_input
            else helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, H, W, 3]),
            helper.make_tensor_value_info("text_embeddings", TensorProto.FLOAT, [2, D]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch, GRID, GRID]),
        ],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if bad_op else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if not bad_op:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_bundle(
    root: Path, *, dynamic_batch: bool = True, with_int8: bool = False, bad_op: bool = False, float_input: bool = False
):
    """Write a bundle with model.onnx (+ model.int8.onnx Q/DQ) and text embeddings; return it loaded."""
    root.mkdir(parents=True, exist_ok=True)
    make_onnx(root / "model.onnx", dynamic_batch=dynamic_batch, bad_op=bad_op, float_input=float_input)
    write_text_embeddings(root, D, 1)
    batch = "batch" if dynamic_batch else 1
    variants = ()
    if with_int8:
        make_onnx(root / "model.int8.onnx", dynamic_batch=dynamic_batch, qdq=True)
        variants = (
            ModelVariant(
                file="model.int8.onnx",
                precision="int8",
                quantization="hand-made QDQ on Conv",
                calibration_set_sha256="ab" * 32,
            ),
        )
    write_test_manifest(
        root,
        model_id="tiny-trt-test",
        preprocess=PreprocessSpec(image_size=(H, W), input_layout="NCHW_float32" if float_input else "NHWC_uint8"),
        inputs=(
            TensorSpec("image", (batch, 3, H, W), "float32")
            if float_input
            else TensorSpec("image", (batch, H, W, 3), "uint8"),
            TensorSpec("text_embeddings", (2, D), "float32"),
        ),
        outputs=(TensorSpec("score", (batch,), "float32"), TensorSpec("anomaly_map", (batch, GRID, GRID), "float32")),
        prompts={"normal": "flawless", "abnormal": "damaged"},
        files=MODEL_FILES + tuple(v.file for v in variants),
        variants=variants,
    )
    return load_bundle(root)


def ort_reference(bundle, batch: np.ndarray, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle.model_path(precision)), providers=["CPUExecutionProvider"])
    score, amap = sess.run(["score", "anomaly_map"], {"image": batch, "text_embeddings": bundle.text_embeddings()})
    return score, amap


def assert_engine_matches_ort(bundle, precision: str, ort_precision: str = "fp32", seed: int = 0) -> None:
    """One random uint8 batch through the TensorRT backend's `precision` engine and through ONNX
    Runtime on the `ort_precision` model: score and anomaly map agree within 1e-2."""
    from edge_runtime.trt.runtime import TrtBackend

    be = TrtBackend()
    be.load(bundle, precision)
    try:
        shape = tuple(1 if isinstance(d, str) else d for d in bundle.manifest.input("image").shape)
        batch = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
        ref_score, ref_map = ort_reference(bundle, batch, ort_precision)
        out = be.infer(batch)
        np.testing.assert_allclose(out.score, ref_score, atol=1e-2)
        np.testing.assert_allclose(out.anomaly_map, ref_map, atol=1e-2)
    finally:
        be.close()


def write_images(folder: Path, n: int, size: int = 24, seed: int = 0) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return folder


def calibrated_int8_argv(bundle_root: Path, images: Path, batch: int, *extra: str) -> list[str]:
    """`clipinspect build-engine` argv for an INT8 engine calibrated (TensorRT's calibrator, no Q/DQ)
    on the images in `images`, `batch` at a time; then `extra` (e.g. `--onnx fp32`, `--calib-num N`)."""
    calib = ("--calib-images", str(images), "--calib-batch", str(batch))
    return ["build-engine", "--bundle", str(bundle_root), "--precision", "int8", *calib, *extra]
