"""The real tiny export (H3's tiny_bundle) through build-engine and the trt backend (stand-ins)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.trt.builder import BuildOptions, build_engine
from tests.trt.helpers import assert_engine_matches_ort


@pytest.mark.slow
def test_real_tiny_export_builds_and_matches_onnxruntime(fake_trt10, tiny_bundle, tmp_path):
    from tests.plugins.bundles import copy_bundle

    root = copy_bundle(tiny_bundle, tmp_path / "bundle")
    bundle = load_bundle(root)
    res = build_engine(bundle, BuildOptions(precision="fp16"))
    assert_engine_matches_ort(res.bundle, "fp16")


@pytest.mark.slow
def test_real_qdq_variant_from_calibrate_builds_int8(fake_trt10, tiny_bundle, mvtec_root, tmp_path):
    """H4's `clipinspect calibrate` Q/DQ model meets TensorRT's Q/DQ rules (int8, zero point 0)
    and the int8 engine computes what ONNX Runtime computes on that model."""
    from edge_runtime.cli import main
    from tests.plugins.bundles import copy_bundle

    root = copy_bundle(tiny_bundle, tmp_path / "bundle")
    assert main(["calibrate", "--bundle", str(root), "--images", str(mvtec_root / "bottle"), "--num", "4"]) == 0
    res = build_engine(load_bundle(root), BuildOptions(precision="int8"))
    assert "explicit-qdq" in res.entry.build_flags and res.entry.source_onnx != "model.onnx"
    assert_engine_matches_ort(res.bundle, "int8", "int8", seed=1)


def test_asymmetric_qdq_is_refused_like_tensorrt(fake_trt10, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edge_runtime.errors import BundleError
    from tests.trt.helpers import make_bundle

    bundle = make_bundle(tmp_path / "b", with_int8=True)
    path = bundle.model_path("int8")
    model = onnx.load(str(path))
    for i, t in enumerate(model.graph.initializer):
        if t.name == "zp":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array(3, np.int8), "zp"))
    onnx.save(model, str(path))
    from edge_runtime.bundle import with_file, write_manifest

    write_manifest(bundle.root, with_file(bundle.manifest, bundle.root, path.name))
    with pytest.raises(BundleError, match="symmetric quantization"):
        build_engine(load_bundle(bundle.root), BuildOptions(precision="int8"))
