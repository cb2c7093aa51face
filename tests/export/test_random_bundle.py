"""Random-weight benchmark bundles: same export path as a trained model, clearly labelled."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.backends import make_backend
from edge_runtime.bundle import load_bundle
from export.onnx_export import ExportOptions
from export.random_bundle import RANDOM_THRESHOLD_METHOD, default_merged_dir, main, make_random_bundle
from export.torch_backend import TorchBackend


def test_tiny_random_bundle_runs_and_matches_torch(tmp_path):
    out = tmp_path / "rb"
    bundle = make_random_bundle(out, arch="tiny", seed=3, options=ExportOptions(dynamic_batch=True))
    m = bundle.manifest
    assert m.model_id.startswith("random-tiny-") and m.clip_source == "random:tiny:seed=3"
    assert m.threshold.method == RANDOM_THRESHOLD_METHOD
    assert m.extra["merged_model"] == str(default_merged_dir(out)) and default_merged_dir(out).is_dir()
    assert m.input("image").shape == ("batch", 64, 64, 3)
    # no leftover temporary CLIP folder next to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rb", "rb-merged"]
    batch = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    ort_b, torch_b = make_backend("ort-cpu", intra_op_threads=1), TorchBackend(threads=1)
    ort_b.load(bundle, "fp32")
    torch_b.load(bundle, "fp32")
    a, b = ort_b.infer(batch), torch_b.infer(batch)
    np.testing.assert_allclose(a.score, b.score, atol=1e-4)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-4)


def test_main_refuses_existing_then_force(tmp_path, capsys):
    out = tmp_path / "rb"
    assert main([str(out), "--arch", "tiny"]) == 0
    assert "RANDOM weights" in capsys.readouterr().out
    first = load_bundle(out).manifest_sha256
    assert main([str(out), "--arch", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("random_bundle: error: ") and "already exists" in err[-1]
    assert main([str(out), "--arch", "tiny", "--seed", "1", "--force"]) == 0
    assert load_bundle(out).manifest_sha256 != first


def test_unknown_arch_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "x"), "--arch", "vit-z"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_vit_b16_random_bundle(tmp_path):
    """The benchmark bundle itself: openai/clip-vit-base-patch16 shapes, 224 px, 14x14 grid."""
    bundle = make_random_bundle(tmp_path / "vitb", arch="vit-b-16")
    m = bundle.manifest
    assert m.input("image").shape == (1, 224, 224, 3) and m.output("anomaly_map").shape == (1, 14, 14)
    assert m.input("text_embeddings").shape == (2, 512)
    assert m.files["model.onnx"].bytes > 300e6  # the real ViT-B/16 vision tower, FP32
