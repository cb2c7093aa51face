"""`clipinspect enroll` on a raw-frame bundle: every good image file is turned into the frame
the bundle's camera delivers (edge_runtime.file_input), so the threshold, the few-shot bank
and the input profile describe what the station will actually see."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.cli import main
from edge_runtime.imageio import read_rgb
from tests.plugins.bundles import RAW_FORMAT, RAW_ROI, RAW_SIZE_HW


def _good_images(mvtec_root, tmp_path, n=6):
    folder = tmp_path / "good"
    folder.mkdir()
    for p in sorted((mvtec_root / "bottle" / "train" / "good").glob("*.png"))[:n]:
        (folder / p.name).symlink_to(p)
    return folder


def _ort_scores(bundle, paths):
    """Scores from a bare ONNX Runtime session fed frames made here with OpenCV (not through
    enroll's code): resize to the frame size, then keep each pixel's Bayer colour sample."""
    import cv2
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle.path("model.onnx")), providers=["CPUExecutionProvider"])
    h, w = RAW_SIZE_HW
    out = []
    for p in paths:
        rgb = cv2.resize(read_rgb(p), (w, h), interpolation=cv2.INTER_AREA)
        frame = np.where(
            (np.arange(h)[:, None] % 2 == 0) & (np.arange(w) % 2 == 0),
            rgb[:, :, 0],
            np.where((np.arange(h)[:, None] % 2 == 1) & (np.arange(w) % 2 == 1), rgb[:, :, 2], rgb[:, :, 1]),
        )
        feeds = {"image": frame.astype(np.uint8)[None], "text_embeddings": bundle.text_embeddings()}
        out.append(float(sess.run(["score"], feeds)[0][0]))
    return np.array(out)


def test_enroll_scores_raw_frames_and_profiles_the_camera_frame(tiny_raw_bundle, mvtec_root, tmp_path, capsys):
    good = _good_images(mvtec_root, tmp_path)
    out = tmp_path / "enrolled"
    assert (
        main(
            [
                "enroll",
                "--bundle",
                str(tiny_raw_bundle),
                "--images",
                str(good),
                "--target-frr",
                "0.3",
                "--best-effort",
                "--out",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    enrolled = load_bundle(out)
    pre = enrolled.manifest.preprocess
    assert (pre.input_format, pre.input_size, pre.roi) == (RAW_FORMAT, RAW_SIZE_HW, RAW_ROI)  # still a raw-frame bundle
    doc = json.loads(enrolled.path("enrollment.json").read_text())
    scores = np.array([r["score"] for r in doc["images"]])
    ref = _ort_scores(enrolled, sorted(good.glob("*.png")))
    assert np.abs(scores - ref).max() <= 1e-5
    assert enrolled.manifest.threshold.value > scores.max()
    profile = json.loads(enrolled.path(enrolled.manifest.input_profile).read_text())
    assert tuple(profile["image_shape"]) == RAW_SIZE_HW  # the camera's Bayer frame, not the 900x900 file
    # and the station's own monitor sees a frame of the same scene as in range
    from edge_runtime.input_alarm import frame_stats, load_profile
    from edge_runtime.rawframe import to_frame

    prof = load_profile(enrolled.path(enrolled.manifest.input_profile))
    frame = to_frame(read_rgb(sorted(good.glob("*.png"))[0]), RAW_FORMAT, RAW_SIZE_HW)
    assert prof.check(frame_stats(frame, "BayerRG8", prof.target_side, np.asarray(prof.reference, np.float32))) == ()


@pytest.mark.slow
def test_enroll_shots_builds_the_bank_from_raw_frames(merged_tiny_dir, mvtec_root, tmp_path, capsys):
    from edge_runtime.backends import make_backend
    from edge_runtime.fewshot import model_input
    from tests.plugins.bundles import export_tiny

    bundle = export_tiny(
        merged_tiny_dir, tmp_path / "bundle", bank_shots=2, input_format=RAW_FORMAT, input_size=RAW_SIZE_HW, roi=RAW_ROI
    )
    good = _good_images(mvtec_root, tmp_path)
    x = model_input(bundle, sorted(good.glob("*.png"))[0])
    assert x.shape == (1, *RAW_SIZE_HW) and x.dtype == np.uint8
    out = tmp_path / "enrolled"
    assert (
        main(
            [
                "enroll",
                "--bundle",
                str(bundle.root),
                "--images",
                str(good),
                "--target-frr",
                "0.3",
                "--best-effort",
                "--shots",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    enrolled = load_bundle(out)
    assert enrolled.manifest.fewshot.shots == 2 and np.abs(enrolled.memory_bank()).max() > 0
    runner = make_backend("ort-cpu", intra_op_threads=1)
    runner.load(enrolled, "fp32")
    doc = json.loads(enrolled.path("enrollment.json").read_text())
    first = doc["images"][0]
    score = float(runner.infer(model_input(enrolled, good / first["file"])).score[0])
    assert abs(score - first["score"]) <= 1e-5  # the enrolled bundle scores the frames enroll scored
