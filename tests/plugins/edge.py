"""Fixtures for edge-runtime tests that must not need torch (hand-built ONNX bundles).

`make_toy_bundle` writes a contract-conforming bundle whose graph is built with onnx.helper:
image uint8 [N,H,W,3] -> normalise (in graph) -> fixed random patch projection (Conv with
stride = patch) -> L2-normalised patch features -> cosine vs `text_embeddings` [2,D] ->
softmax -> anomaly_map [N,h,w]; the global feature (mean of patches) goes through the same
head; score = 0.5 * (p_abnormal_global + max(anomaly_map)), as the real export defines it.
The manifest is written with edge_runtime.bundle, so hashes are checked on load like any
real bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import (
    Manifest,
    ModelVariant,
    PreprocessSpec,
    TensorSpec,
    Threshold,
    load_bundle,
    with_file,
    write_manifest,
)
from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD

MEAN, STD = CLIP_MEAN, CLIP_STD
MODEL_FILES = ("model.onnx", "text_embeddings.npy")


def write_text_embeddings(root: Path, dim: int, seed: int) -> np.ndarray:
    """Save two random unit rows [normal, abnormal] as `root/text_embeddings.npy`; return them."""
    text = np.random.default_rng(seed).standard_normal((2, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    np.save(root / "text_embeddings.npy", text, allow_pickle=False)
    return text


def write_test_manifest(
    root: Path,
    *,
    preprocess: PreprocessSpec,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    model_id: str = "t",
    clip_source: str = "none",
    threshold: Threshold | None = None,
    prompts: dict[str, str] | None = None,
    files: tuple[str, ...] = MODEL_FILES,
    **fields,
) -> Manifest:
    """Write `root/manifest.json` for files already in `root`, hashing each of `files` into it.

    The manifest is made as the export makes it (export.bundle_writer.make_manifest); the text
    prompts and the threshold get test defaults; `fields` replace Manifest fields afterwards
    (variants, versions, ...). Returns the manifest as written.
    """
    from export.bundle_writer import make_manifest

    manifest = make_manifest(
        model_id=model_id,
        clip_source=clip_source,
        preprocess=preprocess,
        inputs=inputs,
        outputs=outputs,
        threshold=threshold or Threshold(0.5, "test"),
        prompts=prompts or {"normal": "a", "abnormal": "b"},
        baked_text=False,
        opset=17,
    )
    manifest = replace(manifest, **fields)
    for name in files:
        manifest = with_file(manifest, root, name)
    write_manifest(root, manifest)
    return manifest


def toy_graph(
    size: int = 64, patch: int = 8, dim: int = 16, seed: int = 0, dynamic_batch: bool = True, logit_scale: float = 3.0
):
    """The toy ONNX ModelProto (opset 17)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    grid = size // patch
    batch: int | str = "batch" if dynamic_batch else 1
    w = (rng.standard_normal((dim, 3, patch, patch)) / np.sqrt(3 * patch * patch)).astype(np.float32)
    b = (0.1 * rng.standard_normal(dim)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.float32(1.0 / 255.0).reshape(()), "inv255"),
        numpy_helper.from_array(np.asarray(MEAN, np.float32).reshape(1, 1, 1, 3), "mean"),
        numpy_helper.from_array(np.asarray(STD, np.float32).reshape(1, 1, 1, 3), "std"),
        numpy_helper.from_array(w, "proj_w"),
        numpy_helper.from_array(b, "proj_b"),
        numpy_helper.from_array(np.asarray([0, dim, grid * grid], np.int64), "flat_shape"),
        numpy_helper.from_array(np.asarray([0, grid, grid], np.int64), "map_shape"),
        numpy_helper.from_array(np.float32(logit_scale).reshape(()), "logit_scale"),
        numpy_helper.from_array(np.float32(0.5).reshape(()), "half"),
        numpy_helper.from_array(np.int64(1).reshape(()), "abnormal"),
    ]
    n = helper.make_node
    nodes = [
        n("Cast", ["image"], ["x_f"], to=TensorProto.FLOAT),
        n("Mul", ["x_f", "inv255"], ["x_s"]),
        n("Sub", ["x_s", "mean"], ["x_c"]),
        n("Div", ["x_c", "std"], ["x_n"]),
        n("Transpose", ["x_n"], ["x_nchw"], perm=[0, 3, 1, 2]),
        n("Conv", ["x_nchw", "proj_w", "proj_b"], ["feat"], kernel_shape=[patch, patch], strides=[patch, patch]),
        n("Reshape", ["feat", "flat_shape"], ["feat_flat"]),
        n("Transpose", ["feat_flat"], ["tokens"], perm=[0, 2, 1]),  # [N, hw, D]
        n("ReduceMean", ["tokens"], ["global"], axes=[1], keepdims=1),  # [N, 1, D]
        n("Concat", ["global", "tokens"], ["all_tokens"], axis=1),  # [N, 1+hw, D]
        n("ReduceL2", ["all_tokens"], ["tok_norm"], axes=[2], keepdims=1),
        n("Div", ["all_tokens", "tok_norm"], ["tok_unit"]),
        n("Transpose", ["text_embeddings"], ["text_t"], perm=[1, 0]),  # [D, 2]
        n("MatMul", ["tok_unit", "text_t"], ["cos"]),  # [N, 1+hw, 2]
        n("Mul", ["cos", "logit_scale"], ["logits"]),
        n("Softmax", ["logits"], ["probs"], axis=-1),
        n("Gather", ["probs", "abnormal"], ["p_abn"], axis=2),  # [N, 1+hw]
    ]
    inits += [
        numpy_helper.from_array(np.asarray([0], np.int64), "s0"),
        numpy_helper.from_array(np.asarray([1], np.int64), "s1"),
        numpy_helper.from_array(np.asarray([1 + grid * grid], np.int64), "s_end"),
        numpy_helper.from_array(np.asarray([1], np.int64), "ax1"),
    ]
    nodes += [
        n("Slice", ["p_abn", "s0", "s1", "ax1"], ["p_global_2d"]),  # [N, 1]
        n("Slice", ["p_abn", "s1", "s_end", "ax1"], ["p_patches"]),  # [N, hw]
        n("Reshape", ["p_patches", "map_shape"], ["anomaly_map"]),
        n("ReduceMax", ["p_patches"], ["p_max"], axes=[1], keepdims=0),  # [N]
        n("ReduceMax", ["p_global_2d"], ["p_global"], axes=[1], keepdims=0),  # [N] (squeeze)
        n("Add", ["p_global", "p_max"], ["sum"]),
        n("Mul", ["sum", "half"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy_anomaly_clip",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, size, size, 3]),
            helper.make_tensor_value_info("text_embeddings", TensorProto.FLOAT, [2, dim]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch, grid, grid]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="clipinspect-tests")
    model.ir_version = 8
    return model


def make_toy_bundle(
    out: str | Path,
    *,
    size: int = 64,
    patch: int = 8,
    dim: int = 16,
    seed: int = 0,
    dynamic_batch: bool = True,
    threshold: float = 0.5,
    int8: bool = False,
):
    """Write a toy bundle folder at `out` and return the loaded Bundle."""
    import onnx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = toy_graph(size, patch, dim, seed, dynamic_batch)
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    write_text_embeddings(out, dim, seed + 1)
    batch: int | str = "batch" if dynamic_batch else 1
    grid = size // patch
    variants = ()
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(out / "model.onnx"),
            str(out / "model.int8.onnx"),
            op_types_to_quantize=["Conv"],
            weight_type=QuantType.QUInt8,
        )
        variants = (ModelVariant(file="model.int8.onnx", precision="int8", quantization="ort dynamic, Conv weights"),)
    write_test_manifest(
        out,
        model_id=f"toy-{size}px-p{patch}-d{dim}-s{seed}",
        clip_source="none (hand-built test graph)",
        preprocess=PreprocessSpec(image_size=(size, size), mean=MEAN, std=STD),
        inputs=(
            TensorSpec("image", (batch, size, size, 3), "uint8", "RGB image, normalised in the graph"),
            TensorSpec("text_embeddings", (2, dim), "float32", "row 0 normal, row 1 abnormal"),
        ),
        outputs=(
            TensorSpec("score", (batch,), "float32", "image anomaly score in [0,1]"),
            TensorSpec("anomaly_map", (batch, grid, grid), "float32", "per-patch probability of abnormal"),
        ),
        threshold=Threshold(value=threshold, method="fixed (toy bundle)"),
        prompts={"normal": "a photo of a flawless object", "abnormal": "a photo of a damaged object"},
        files=MODEL_FILES + tuple(v.file for v in variants),
        variants=variants,
        versions={"onnx": onnx.__version__},
    )
    return load_bundle(out)


@pytest.fixture(scope="session")
def toy_bundle_factory(tmp_path_factory) -> Callable[..., object]:
    """Call with make_toy_bundle's keyword arguments; each call gets its own folder."""
    counter = iter(range(1_000_000))

    def factory(**kwargs):
        return make_toy_bundle(tmp_path_factory.mktemp(f"toy_bundle_{next(counter)}"), **kwargs)

    return factory


@pytest.fixture(scope="session")
def toy_bundle(toy_bundle_factory):
    """A torch-free bundle (64 px, 8x8 patch grid, dynamic batch, fp32 + int8 variant)."""
    return toy_bundle_factory(int8=True)
