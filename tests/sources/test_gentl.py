"""gentl:// for real through harvesters and the viky.cti GenTL simulator shipped with `genicam`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import SourceError
from edge_runtime.sources import open_source
from edge_runtime.sources.gentl import simulator_producer

pytestmark = pytest.mark.camera


@pytest.fixture(scope="module")
def viky() -> Path:
    cti = simulator_producer()
    if cti is None:
        pytest.skip("no GenTL simulator: needs the genicam wheel (ships viky.cti) and harvesters")
    return cti


def test_grabs_frames_end_to_end(viky):
    opts = {"pixel_format": "Mono8", "roi": [0, 0, 128, 100], "fps": 50.0, "timeout_ms": 2000}
    with open_source(f"gentl://{viky}?serial=1", opts) as src:
        frames = [f for _, f in zip(range(5), src.frames())]
        stats = src.stats()
        settings = dict(src.settings)
    assert len(frames) == 5
    assert all(f.image.shape == (100, 128) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.meta["pixel_format"] == "Mono8" and f.camera_serial == "1" for f in frames)
    ids = [f.meta["device_frame_id"] for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [f.frame_id for f in frames] == list(range(5))
    assert settings["PixelFormat"] == "Mono8" and settings["Width"] == 128 and settings["AcquisitionFrameRate"] == 50.0
    assert settings["StreamBufferHandlingMode"] == "NewestOnly"
    assert stats["delivered"] == 5 and stats["reconnects"] == 0
    # Each frame owns a copy: none shares the producer's (re-queued) buffer with another.
    assert not any(np.shares_memory(a.image, b.image) for a, b in zip(frames, frames[1:]))


def test_default_camera_colour_frames_and_reopen(viky):
    with open_source(f"gentl://{viky}", {"timeout_ms": 2000}) as src:
        frame = src.read() or src.read()
    assert frame is not None and frame.camera_serial == "0"
    assert frame.image.ndim == 3 and frame.meta["pixel_format"] in ("RGBa8", "RGB8")
    # close() reset the Harvester: the same device opens again.
    with open_source(f"gentl://{viky}?serial=0", {"timeout_ms": 2000}) as src:
        assert (src.read() or src.read()) is not None


def test_requested_feature_the_camera_lacks_is_warned(viky, caplog):
    caplog.set_level(logging.WARNING)
    with open_source(f"gentl://{viky}?serial=2", {"exposure_us": 500.0, "timeout_ms": 2000}) as src:
        assert src.stats()["missing_features"] == 1
    assert any("ExposureTime" in r.getMessage() and "NOT applied" in r.getMessage() for r in caplog.records)


def test_timeouts_are_counted(viky):
    with open_source(f"gentl://{viky}?serial=0", {"fps": 1.0, "timeout_ms": 5}) as src:
        results = [src.read() for _ in range(3)]
        assert src.stats()["timeouts"] >= 1
        assert src.stats()["timeouts"] + src.stats()["delivered"] == len(results)


def test_producer_from_environment(viky, monkeypatch):
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(viky.parent))
    with open_source("gentl://?serial=1", {"timeout_ms": 2000}) as src:
        assert src.camera_serial == "1"
    monkeypatch.setenv("GENICAM_GENTL64_PATH", "")
    with pytest.raises(SourceError, match="GENICAM_GENTL64_PATH"):
        open_source("gentl://?serial=1")


def test_unknown_serial_and_bad_producer(viky, tmp_path):
    with pytest.raises(SourceError, match=r"no device with serial 99 \(found: 0, 1, 2\)"):
        open_source(f"gentl://{viky}?serial=99")
    with pytest.raises(SourceError, match="GenTL producer not found"):
        open_source(f"gentl://{tmp_path / 'missing.cti'}")
    with pytest.raises(SourceError, match="ending in .cti"):
        open_source(f"gentl://{tmp_path}")
    with pytest.raises(SourceError, match=r"cannot set PixelFormat='BayerRG8'.*allowed: RGBa8, Mono8"):
        open_source(f"gentl://{viky}?serial=0&pixel_format=BayerRG8")


def test_lost_stream_is_reconnected(viky):
    with open_source(f"gentl://{viky}?serial=1", {"timeout_ms": 300, "reconnect_backoff_s": 0.01}) as src:
        assert (src.read() or src.read()) is not None
        # Simulate the stream stopping under us (as after a cable pull): the next fetch
        # finds no acquisition, and the source must rebuild the acquirer.
        src._ia.stop()
        assert src.read() is None
        assert src.stats()["device_lost"] == 1 and src.stats()["reconnects"] == 1
        assert src.read() is not None
