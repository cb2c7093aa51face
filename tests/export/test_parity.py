"""Training-side score == device score (DESIGN §5), on the real MVTec bottle images.

Training side: the merged model in torch on the tensor train's data pipeline produces
(train.data.AnomalyDataset: read_rgb -> prepare -> normalize). Device side: ONNX Runtime on
the bundle's graph, fed the uint8 image from the device's own path (read_rgb -> prepare),
normalisation inside the graph, text embeddings from the bundle's .npy.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.backends import make_backend
from edge_runtime.backends.base import Outputs
from edge_runtime.bundle import load_bundle
from edge_runtime.errors import CheckFailed
from edge_runtime.file_input import image_input
from export.parity import ParityReport, ParityRow, compare_outputs, list_images, run_parity
from export.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def bottle_samples(mvtec_root):
    from train.data import load_samples

    samples = load_samples(mvtec_root, splits=("test",), categories=["bottle"])
    idx = np.linspace(0, len(samples) - 1, 6).round().astype(int)
    picked = [samples[i] for i in idx]
    assert {s.label for s in picked} == {0, 1}  # both good and defective images
    return picked


def test_fp32_training_score_equals_device_score(tiny_bundle, merged_tiny_dir, bottle_samples):
    import torch

    from train.data import AnomalyDataset
    from train.merged import load_merged

    torch.set_num_threads(1)
    bundle = load_bundle(tiny_bundle)
    pre = bundle.manifest.preprocess
    model, info = load_merged(merged_tiny_dir)
    ds = AnomalyDataset(bottle_samples, info.image_size, info.mean, info.std)
    device = make_backend("ort-cpu", intra_op_threads=1)
    device.load(bundle, "fp32")
    with torch.no_grad():
        text = model.text_embeddings()
        train_side = [model(ds[i]["pixel_values"][None], text) for i in range(len(ds))]
    dev_side = [device.infer(image_input(s.image_path, pre)[None]) for s in bottle_samples]
    ts = np.array([float(o.score[0]) for o in train_side])
    dsc = np.array([float(o.score[0]) for o in dev_side])
    assert np.abs(ts - dsc).max() <= 1e-4
    for t, d in zip(train_side, dev_side):
        np.testing.assert_allclose(d.anomaly_map, t.anomaly_map.numpy(), atol=1e-4)
    # the comparison is not vacuous: images give different scores
    assert np.ptp(ts) > 1e-4


def test_torch_backend_vs_ort_on_real_images(tiny_bundle, mvtec_root):
    bundle = load_bundle(tiny_bundle)
    ref = TorchBackend(threads=1)
    ref.load(bundle, "fp32")
    cand = make_backend("ort-cpu", intra_op_threads=1)
    cand.load(bundle, "fp32")
    images = list_images(mvtec_root / "bottle" / "test", max_images=5)
    assert not any(p.stem.endswith("_mask") for p in images)
    report = run_parity(bundle, ref, cand, images, atol=1e-4, progress=False)
    assert report.ok, report.summary()
    assert len(report.rows) == 5 and report.verdicts_agree == 5
    assert report.max_score_diff <= 1e-4 and report.max_map_diff <= 1e-4
    d = ref.describe()
    assert d["backend"] == "torch" and d["precision"] == "fp32" and d["device"] == "cpu"


def _outputs(score, amap):
    return Outputs(np.asarray(score, np.float32), np.asarray(amap, np.float32))


def test_compare_outputs_and_report_logic():
    ref = _outputs([0.5], np.zeros((1, 2, 2)))
    ds, dm = compare_outputs(ref, _outputs([0.5002], np.full((1, 2, 2), 0.001)), "x")
    assert ds[0] == pytest.approx(2e-4, rel=1e-3) and dm[0] == pytest.approx(1e-3, rel=1e-3)
    ds, dm = compare_outputs(ref, _outputs([np.nan], np.zeros((1, 2, 2))), "x")
    assert np.isinf(ds[0])
    with pytest.raises(CheckFailed, match="output shapes differ"):
        compare_outputs(ref, _outputs([0.5], np.zeros((1, 3, 3))), "img.png")
    rows = (ParityRow("a", 0.40, 0.40005, 1e-5), ParityRow("b", 0.5, 0.49999, 2e-5))
    rep = ParityReport(rows, atol=1e-4, threshold=0.5, reference="torch/fp32", candidate="ort-cpu/fp32")
    assert rep.ok and rep.verdicts_agree == 1  # b flips across the threshold (0.5 NG vs 0.49999 OK)
    assert "1/2" in rep.summary() and "PASS" in rep.summary()
    tight = ParityReport(rows, atol=1e-5, threshold=0.5, reference="r", candidate="c")
    assert not tight.ok and "FAIL" in tight.summary()
    nan = ParityReport((ParityRow("n", 0.4, float("nan"), 0.0),), atol=1.0, threshold=0.5, reference="r", candidate="c")
    assert not nan.ok
    assert not ParityReport((), atol=1.0, threshold=0.5, reference="r", candidate="c").ok


def test_list_images_spreads_and_skips_masks(mvtec_root, tmp_path):
    from edge_runtime.errors import DataError

    every = list_images(mvtec_root / "bottle")
    assert len(every) == 64 and not any("ground_truth" in p.parts for p in every)
    few = list_images(mvtec_root / "bottle", max_images=4)
    assert len(few) == 4 and few[0] == every[0] and few[-1] == every[-1]
    with pytest.raises(DataError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(DataError, match="image folder not found"):
        list_images(tmp_path / "nope")
