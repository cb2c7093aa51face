"""Verdicts from model outputs and the bounded heatmap folder."""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.frames import Frame
from edge_runtime.postprocess import HeatmapOptions, HeatmapWriter, Postprocessor, overlay
from edge_runtime.verdict import validate_verdict

INFO = {"backend": "ort-cpu", "precision": "fp32"}


def _frame(i: int, h: int = 120, w: int = 160) -> Frame:
    img = np.full((h, w, 3), 90, np.uint8)
    return Frame(
        image=img, timestamp_ns=time.monotonic_ns(), frame_id=i, camera_serial="cam/0", meta={"pixel_format": "RGB8"}
    )


def test_verdict_uses_bundle_threshold_and_validates(toy_bundle):
    post = Postprocessor(toy_bundle, INFO)
    assert post.threshold == toy_bundle.manifest.threshold.value == 0.5
    amap = np.zeros((8, 8), np.float32)
    ok = post(_frame(1), 0.2, amap, {"inference": 3.0})
    ng = post(_frame(2), 0.5, amap, {"inference": 3.0})
    assert (ok["verdict"], ng["verdict"]) == ("OK", "NG")
    for v in (ok, ng):
        assert validate_verdict(json.loads(json.dumps(v))) == []
        assert v["bundle_sha256"] == toy_bundle.manifest_sha256 and v["heatmap"] is None
    assert (post.ok, post.ng) == (1, 1)


def test_threshold_override(toy_bundle):
    post = Postprocessor(toy_bundle, INFO, threshold=0.9)
    v = post(_frame(1), 0.6, np.zeros((8, 8), np.float32), {})
    assert v["threshold"] == 0.9 and v["verdict"] == "OK" and post.threshold_source == "override"


def test_ng_heatmap_written_only_for_ng_and_overlays_the_hot_patch(toy_bundle, tmp_path):
    post = Postprocessor(toy_bundle, INFO, heatmaps=HeatmapOptions(dir=tmp_path / "hm", max_files=10))
    amap = np.zeros((8, 8), np.float32)
    amap[0, 7] = 1.0  # top-right patch
    assert post(_frame(1), 0.1, amap, {})["heatmap"] is None
    v = post(_frame(2), 0.9, amap, {})
    path = v["heatmap"]
    assert path and os.path.isfile(path) and validate_verdict(v) == []
    img = cv2.imread(path)
    assert img.shape == (120, 160, 3)
    # JET maps 1.0 to red and 0.0 to blue: top-right is redder than bottom-left.
    assert img[5, 155, 2] > img[115, 5, 2] + 50 and img[115, 5, 0] > img[5, 155, 0]


def test_heatmap_folder_stays_bounded_and_keeps_newest(tmp_path):
    writer = HeatmapWriter(HeatmapOptions(dir=tmp_path, max_files=3))
    rgb = np.zeros((32, 32, 3), np.uint8)
    paths = [writer.write(rgb, np.random.default_rng(i).random((4, 4), dtype=np.float32), f"f{i}") for i in range(7)]
    left = sorted(p.name for p in tmp_path.glob("*.jpg"))
    assert left == [p.name for p in paths[-3:]]
    assert writer.deleted == 4 and writer.written == 7
    # A restart counts the files already there.
    writer2 = HeatmapWriter(HeatmapOptions(dir=tmp_path, max_files=2))
    writer2.write(rgb, np.zeros((4, 4), np.float32), "g")
    assert len(list(tmp_path.glob("*.jpg"))) == 2


def test_large_frames_are_downscaled(tmp_path):
    writer = HeatmapWriter(HeatmapOptions(dir=tmp_path, max_side=100))
    p = writer.write(np.zeros((400, 800, 3), np.uint8), np.ones((4, 4), np.float32), "big")
    assert cv2.imread(str(p)).shape == (50, 100, 3)


def test_overlay_shape_and_alpha():
    rgb = np.zeros((20, 30, 3), np.uint8)
    assert overlay(rgb, np.zeros((2, 3), np.float32), alpha=0.0).max() == 0
    assert overlay(rgb, np.zeros((2, 3), np.float32), alpha=1.0).shape == (20, 30, 3)


@pytest.mark.parametrize("kwargs", [{"max_files": 0}, {"alpha": 1.5}, {"jpeg_quality": 0}])
def test_bad_heatmap_options(kwargs):
    with pytest.raises(ConfigError):
        HeatmapOptions(**kwargs)


def test_heatmap_write_failure_keeps_the_verdict(toy_bundle, tmp_path):
    hm = tmp_path / "hm"
    post = Postprocessor(toy_bundle, INFO, heatmaps=HeatmapOptions(dir=hm))
    hm.rmdir()
    hm.write_text("not a folder any more")  # writing into it fails, even as root, like a dead disk
    v = post(_frame(1), 0.9, np.ones((8, 8), np.float32), {})
    assert v["verdict"] == "NG" and v["heatmap"] is None and post.heatmap_errors == 1
    assert validate_verdict(v) == []
