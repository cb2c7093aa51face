"""The real tiny export (H3's tiny_bundle) through build-engine and the trt backend (stand-ins)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.trt.builder import BuildOptions, build_engine
from edge_runtime.trt.runtime import TrtBackend
from tests.trt.helpers import ort_reference


@pytest.mark.slow
def test_real_tiny_export_builds_and_matches_onnxruntime(fake_trt10, tiny_bundle, tmp_path):
    from tests.plugins.bundles import copy_bundle

    root = copy_bundle(tiny_bundle, tmp_path / "bundle")
    bundle = load_bundle(root)
    res = build_engine(bundle, BuildOptions(precision="fp16"))
    be = TrtBackend()
    be.load(res.bundle, "fp16")
    spec = bundle.manifest.input("image")
    shape = tuple(1 if isinstance(d, str) else d for d in spec.shape)
    batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ref_score, ref_map = ort_reference(res.bundle, batch)
    out = be.infer(batch)
    np.testing.assert_allclose(out.score, ref_score, atol=1e-2)
    np.testing.assert_allclose(out.anomaly_map, ref_map, atol=1e-2)
    be.close()
