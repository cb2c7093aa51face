"""Raw-frame bundles end to end: export flags -> manifest -> ONNX (Cast first) -> parity with
the torch module training uses -> the runtime's frame checks -> the TensorRT stand-in."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.backends import make_backend
from edge_runtime.bundle import load_bundle
from edge_runtime.errors import ConfigError, FrameRejected
from edge_runtime.frames import Frame
from edge_runtime.pipeline import make_preprocessor
from edge_runtime.rawframe import mosaic_frame, to_frame
from export.torch_backend import TorchBackend
from tests.plugins.bundles import RAW_ROI, RAW_SIZE_HW


def _frames(n: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    rgb = [cv2.GaussianBlur(rng.integers(0, 256, (*RAW_SIZE_HW, 3), dtype=np.uint8), (0, 0), 2) for _ in range(n)]
    return np.stack([mosaic_frame(x, "bayer_rg8") for x in rgb])


def test_manifest_records_the_frame_and_the_graph_takes_it(tiny_raw_bundle):
    m = load_bundle(tiny_raw_bundle).manifest
    pre = m.preprocess
    assert (pre.input_layout, pre.input_format, pre.input_size, pre.roi) == (
        "frame_uint8",
        "bayer_rg8",
        RAW_SIZE_HW,
        RAW_ROI,
    )
    assert m.input("image").shape == (1, *RAW_SIZE_HW) and m.input("image").dtype == "uint8"


def test_the_uint8_frame_feeds_only_a_cast_to_float(tiny_raw_bundle, tiny_bundle):
    import onnx

    for root in (tiny_raw_bundle, tiny_bundle):  # raw-frame and model-size graphs alike
        g = onnx.load(str(load_bundle(root).path("model.onnx"))).graph
        users = [n for n in g.node if "image" in n.input]
        assert [n.op_type for n in users] == ["Cast"], root
        assert users[0].attribute[0].i == onnx.TensorProto.FLOAT


def test_onnx_matches_the_torch_module_within_fp32_tolerance(tiny_raw_bundle):
    bundle = load_bundle(tiny_raw_bundle)
    ort_b, torch_b = make_backend("ort-cpu", intra_op_threads=1), TorchBackend(threads=1)
    ort_b.load(bundle, "fp32")
    torch_b.load(bundle, "fp32")
    for frame in _frames(2):
        a, b = ort_b.infer(frame[None]), torch_b.infer(frame[None])
        assert np.abs(a.score - b.score).max() <= 1e-4
        assert np.abs(a.anomaly_map - b.anomaly_map).max() <= 1e-4


def test_parity_on_image_files_feeds_frames(tiny_raw_bundle, tmp_path):
    import cv2

    from export.parity import run_parity

    for i in range(2):
        cv2.imwrite(
            str(tmp_path / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (120, 200, 3), dtype=np.uint8)
        )
    bundle = load_bundle(tiny_raw_bundle)
    ref, cand = TorchBackend(threads=1), make_backend("ort-cpu", intra_op_threads=1)
    ref.load(bundle, "fp32")
    cand.load(bundle, "fp32")
    report = run_parity(bundle, ref, cand, sorted(tmp_path.glob("*.png")), 1e-4, progress=False)
    assert report.ok and len(report.rows) == 2


def test_runtime_hands_the_frame_on_uncopied_and_refuses_other_frames(tiny_raw_bundle):
    bundle = load_bundle(tiny_raw_bundle)
    pre = make_preprocessor(bundle)
    frame = _frames(1)[0]
    x = pre(Frame(frame, 0, 7, "cam", {"pixel_format": "BayerRG8"}))
    assert np.shares_memory(x, frame) and x.shape == RAW_SIZE_HW
    with pytest.raises(FrameRejected) as exc:
        pre(Frame(frame, 0, 8, "cam", {"pixel_format": "BayerGB8"}))
    assert exc.value.reason == "frame_format_mismatch" and "BayerGB8" in str(exc.value) and "BayerRG8" in str(exc.value)
    with pytest.raises(FrameRejected) as exc:
        pre(Frame(frame[:, :-2], 0, 9, "cam", {"pixel_format": "BayerRG8"}))
    assert exc.value.reason == "frame_size_mismatch" and "180x100" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="fixed at export"):
        from edge_runtime.preprocess import Roi

        make_preprocessor(bundle, Roi(0, 0, 10, 10))


def test_training_module_on_mosaiced_images_gives_the_device_score(tiny_raw_bundle, merged_tiny_dir):
    """Training's data path (RGB file -> to_frame -> RawFrameModel) computes what the ONNX
    graph computes from the camera frame of the same scene."""
    import torch

    from train.frame_module import FramePreprocess, RawFrameModel
    from train.merged import load_merged

    bundle = load_bundle(tiny_raw_bundle)
    pre = bundle.manifest.preprocess
    model, _ = load_merged(merged_tiny_dir)
    frame_mod = FramePreprocess(pre.input_format, pre.input_size, pre.image_size, pre.mean, pre.std, roi=pre.roi)
    net = RawFrameModel(model.eval(), frame_mod).eval()
    rgb = np.random.default_rng(5).integers(0, 256, (300, 540, 3), dtype=np.uint8)
    frame = to_frame(rgb, pre.input_format, pre.input_size)
    with torch.no_grad():
        train_score = net(torch.from_numpy(frame[None]), model.text_embeddings()).score.numpy()
    ort_b = make_backend("ort-cpu", intra_op_threads=1)
    ort_b.load(bundle, "fp32")
    assert np.abs(ort_b.infer(frame[None]).score - train_score).max() <= 1e-4
    # and gradients flow through the frame module into the model (it is trainable end to end)
    x = torch.from_numpy(frame[None])
    loss = net(x, model.text_embeddings()).score.sum()
    loss.backward()
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--input-format", "bayer_rg8"], "go together"),
        (["--roi", "0,0,8,8"], "needs --input-format"),
        (["--input-format", "bayer_rg8", "--input-size", "180x100", "--roi", "1,0,20,20"], "even pixels"),
        (["--input-format", "mono8", "--input-size", "180x100", "--roi", "0,0,400,20"], "inside the 180x100 frame"),
        (["--input-format", "rgb8", "--input-size", "180by100"], "WIDTHxHEIGHT"),
        (["--input-format", "rgb8", "--input-size", "180x100", "--float-input"], "exclude each other"),
    ],
)
def test_bad_frame_flags_are_one_line_errors(merged_tiny_dir, tmp_path, capsys, flags, message):
    from edge_runtime.cli import main

    assert main(["export", "--merged", str(merged_tiny_dir), "--out", str(tmp_path / "b"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_every_format_sees_the_same_scene():
    """The module's demosaic per format: an RGB scene delivered as rgb8, bgr8 and any Bayer
    pattern gives (nearly) the same model input; mono8 gives its grey in all three channels."""
    import cv2
    import torch

    from edge_runtime.preprocess import CLIP_MEAN, CLIP_STD
    from train.frame_module import FramePreprocess

    rgb = cv2.GaussianBlur(np.random.default_rng(3).integers(0, 256, (96, 160, 3), dtype=np.uint8), (0, 0), 3)
    outs = {}
    for fmt in ("rgb8", "bgr8", "bayer_rg8", "bayer_bg8", "bayer_gr8", "bayer_gb8", "mono8"):
        mod = FramePreprocess(fmt, (96, 160), (32, 32), CLIP_MEAN, CLIP_STD)
        with torch.no_grad():
            outs[fmt] = mod(torch.from_numpy(mosaic_frame(rgb, fmt)[None])).numpy()[0]
    assert np.array_equal(outs["rgb8"], outs["bgr8"])
    for fmt in ("bayer_rg8", "bayer_bg8", "bayer_gr8", "bayer_gb8"):
        assert np.abs(outs[fmt] - outs["rgb8"]).mean() < 0.02, fmt  # ~1 grey level of 255
    grey = outs["mono8"] * np.asarray(CLIP_STD)[:, None, None] + np.asarray(CLIP_MEAN)[:, None, None]
    assert np.allclose(grey[0], grey[1], atol=1e-5) and np.allclose(grey[0], grey[2], atol=1e-5)


@pytest.mark.slow
def test_dynamic_batch_bgr_frames_export_and_match_torch(merged_tiny_dir, tmp_path):
    from tests.plugins.bundles import export_tiny

    bundle = export_tiny(merged_tiny_dir, tmp_path / "b", dynamic_batch=True, input_format="bgr8", input_size=(90, 150))
    assert bundle.manifest.input("image").shape == ("batch", 90, 150, 3)
    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 150, 3), dtype=np.uint8)
    ort_b, torch_b = make_backend("ort-cpu", intra_op_threads=1), TorchBackend(threads=1)
    ort_b.load(bundle, "fp32")
    torch_b.load(bundle, "fp32")
    a, b = ort_b.infer(frames), torch_b.infer(frames)
    assert (
        a.score.shape == (3,)
        and np.abs(a.score - b.score).max() <= 1e-4
        and np.abs(a.anomaly_map - b.anomaly_map).max() <= 1e-4
    )


def test_bench_feeds_raw_frame_bundles_camera_frames(tiny_raw_bundle, tmp_path, capsys):
    """`clipinspect bench` on a raw-frame bundle: model-only gets a frame of the manifest's
    shape, end-to-end a synthetic camera of its format and size by default."""
    import json

    from edge_runtime.cli import main

    out = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                "--bundle",
                str(tiny_raw_bundle),
                "--iterations",
                "3",
                "--frames",
                "3",
                "--warmup",
                "1",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads((out / "bench.json").read_text())
    assert doc["settings"]["source"] == "synthetic://?width=180&height=100&pixel_format=BayerRG8"
    run = doc["runs"][0]
    assert run["e2e"]["frames"] == 3 and run["e2e"]["counters"].get("drops_inference_queue", 0) == 0
    assert run["e2e"]["stages"]["preprocess"]["p50_ms"] < 5  # a check, not pixel work


def test_parity_on_real_images(tiny_raw_bundle, mvtec_root):
    """Real photos (MVTec bottle) as camera frames: ORT and the torch module agree (FP32)."""
    from export.parity import list_images, run_parity

    bundle = load_bundle(tiny_raw_bundle)
    ref, cand = TorchBackend(threads=1), make_backend("ort-cpu", intra_op_threads=1)
    ref.load(bundle, "fp32")
    cand.load(bundle, "fp32")
    report = run_parity(bundle, ref, cand, list_images(mvtec_root / "bottle", 4), 1e-4, progress=False)
    assert report.ok and report.verdicts_agree == len(report.rows) == 4


def test_qdq_calibration_refuses_raw_frame_bundles_in_one_line(tiny_raw_bundle, tmp_path, capsys):
    import cv2

    from edge_runtime.cli import main
    from tests.plugins.bundles import copy_bundle

    root = copy_bundle(tiny_raw_bundle, tmp_path / "bundle")
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 40, 3), 100 + i, np.uint8))
    assert main(["calibrate", "--bundle", str(root), "--images", str(tmp_path), "--num", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "raw-frame bundle" in err[-1] and "build-engine" in err[-1]
