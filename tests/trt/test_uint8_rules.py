"""TensorRT's uint8 rule in the stand-in: a uint8 network input may feed only a Cast to
float/half (tensorrt.DataType.UINT8 docs). The old transpose-before-cast export is refused,
today's exports (model-size and raw-frame) build and run."""

from __future__ import annotations

import pytest

from edge_runtime.bundle import load_bundle, with_file, write_manifest
from edge_runtime.errors import BundleError
from edge_runtime.trt.builder import BuildOptions, build_engine
from tests.trt.helpers import assert_engine_matches_ort, make_bundle


def _rewrite_head(bundle, head):
    """Replace the graph's uint8 head (Cast .. Transpose -> x_nchw) by `head` nodes."""
    import onnx
    from onnx import helper

    path = bundle.model_path("fp32")
    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    cut = next(i for i, n in enumerate(nodes) if "x_nchw" in n.output) + 1
    del model.graph.node[:]
    model.graph.node.extend([helper.make_node(*h[:3], **h[3]) for h in head] + nodes[cut:])
    onnx.save(model, str(path))
    write_manifest(bundle.root, with_file(bundle.manifest, bundle.root, path.name))
    return load_bundle(bundle.root)


def test_transpose_before_cast_is_refused_like_tensorrt(fake_trt, tmp_path):
    from onnx import TensorProto

    # What export/onnx_export.py wrote before: permute the uint8 NHWC image, then cast.
    old = [
        ("Transpose", ["image"], ["x_u8_nchw"], {"perm": [0, 3, 1, 2]}),
        ("Cast", ["x_u8_nchw"], ["x_nchw"], {"to": TensorProto.FLOAT}),
    ]
    bundle = _rewrite_head(make_bundle(tmp_path / "b"), old)
    with pytest.raises(BundleError, match="UINT8 tensor 'image' feeds a Transpose"):
        build_engine(bundle, BuildOptions(precision="fp16"))


def test_uint8_cast_to_int32_is_refused(fake_trt10, tmp_path):
    from onnx import TensorProto

    head = [
        ("Cast", ["image"], ["x_i"], {"to": TensorProto.INT32}),
        ("Cast", ["x_i"], ["x_f"], {"to": TensorProto.FLOAT}),
        ("Transpose", ["x_f"], ["x_nchw"], {"perm": [0, 3, 1, 2]}),
    ]
    bundle = _rewrite_head(make_bundle(tmp_path / "b"), head)
    with pytest.raises(BundleError, match="uint8 converts only to FLOAT or HALF"):
        build_engine(bundle, BuildOptions(precision="fp16"))


@pytest.mark.parametrize("which", ["tiny_bundle", "tiny_raw_bundle"])
def test_todays_exports_build_and_run(fake_trt10, which, request, tmp_path):
    from tests.plugins.bundles import copy_bundle

    root = copy_bundle(request.getfixturevalue(which), tmp_path / "bundle")
    res = build_engine(load_bundle(root), BuildOptions(precision="fp16"))
    assert_engine_matches_ort(res.bundle, "fp16")


def test_raw_frame_bundle_calibrates_int8_on_frames(fake_trt10, tiny_raw_bundle, tmp_path):
    """build-engine --calib-images on a raw-frame bundle feeds the calibrator camera frames
    (each image mosaiced at the frame size), not model-size RGB."""
    from edge_runtime.cli import main
    from tests.plugins.bundles import copy_bundle
    from tests.trt.helpers import calibrated_int8_argv, write_images

    root = copy_bundle(tiny_raw_bundle, tmp_path / "bundle")
    images = write_images(tmp_path / "calib", 4, size=40)
    assert main(calibrated_int8_argv(root, images, 2)) == 0
    (e,) = load_bundle(root).manifest.engines
    assert e.precision == "int8" and e.calibration_cache
