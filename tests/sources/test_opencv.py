"""cv:// and bare video paths through OpenCV: a video written here is read back frame by frame."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import SourceError
from edge_runtime.sources import open_source

LEVELS = [0, 40, 80, 120, 160, 200]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for level in LEVELS:
        frame = np.full((48, 64, 3), level, np.uint8)
        frame[:, :, 2] = 255 - level  # red channel (BGR order) differs from blue
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize("form", ["cv://{}", "{}"])
def test_video_file_is_read_to_the_end(video, form):
    with open_source(form.format(video)) as src:
        frames = list(src.frames())
        assert src.ended
    assert len(frames) == len(LEVELS)
    assert all(f.image.shape == (48, 64, 3) and f.meta["pixel_format"] == "BGR8" for f in frames)
    blue = [float(f.image[..., 0].mean()) for f in frames]
    red = [float(f.image[..., 2].mean()) for f in frames]
    assert np.allclose(blue, LEVELS, atol=6) and np.allclose(red, [255 - v for v in LEVELS], atol=6)
    assert [f.frame_id for f in frames] == list(range(len(LEVELS)))
    assert src.stats()["read_failures"] == 0


def test_loop_restarts_the_file_and_fps_paces_it(video):
    t0 = time.monotonic()
    with open_source(f"cv://{video}?loop=1&fps=100") as src:
        frames = [f for _, f in zip(range(9), src.frames())]
    assert time.monotonic() - t0 >= 8 / 100 - 0.01
    means = [round(float(f.image[..., 0].mean()) / 40) for f in frames]
    assert means == [0, 1, 2, 3, 4, 5, 0, 1, 2]


def test_missing_file_and_unopenable_file(tmp_path):
    with pytest.raises(SourceError, match="video file not found"):
        open_source(f"cv://{tmp_path / 'nope.mp4'}")
    bogus = tmp_path / "bogus.avi"
    bogus.write_bytes(b"definitely not a video" * 10)
    with pytest.raises(SourceError, match="OpenCV cannot open"):
        open_source(f"cv://{bogus}")


@pytest.mark.skipif("GStreamer:                   YES" in cv2.getBuildInformation(), reason="this OpenCV has GStreamer")
def test_gstreamer_pipeline_without_gstreamer_is_a_clear_error():
    with pytest.raises(SourceError) as err:
        open_source("gst://videotestsrc num-buffers=2 ! videoconvert ! appsink")
    assert "GStreamer" in str(err.value) and "\n" not in str(err.value)
