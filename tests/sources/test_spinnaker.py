"""spinnaker:// against the PySpin stand-in in tests/fakes (no FLIR camera in CI)."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from edge_runtime.errors import MissingDependency, SourceError
from edge_runtime.sources import SourceOptions, make_source, open_source

FAST = {"timeout_ms": 20, "reconnect_backoff_s": 0.001}


def expected_pattern(h: int, w: int, device_id: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx + 2 * yy + 7 * device_id) % 251).astype(np.uint8)


def lifecycle_tail(calls):
    return [c[0] for c in calls if c[0] in ("EndAcquisition", "DeInit", "CameraList.Clear", "ReleaseInstance")]


def test_nodes_are_configured_as_requested(pyspin):
    dev = pyspin.fake_add_camera("1234", width=128, height=96)
    opts = SourceOptions(
        exposure_us=2500.0,
        gain_db=6.0,
        pixel_format="BayerRG8",
        trigger="hardware",
        trigger_line="Line2",
        trigger_edge="FallingEdge",
        buffer_count=4,
        binning_horizontal=2,
        binning_vertical=2,
        roi=(8, 4, 32, 24),
        fps=25.0,
    )
    with open_source("spinnaker://1234", opts) as src:
        assert dev.streaming
        assert dev.value("AcquisitionMode") == "Continuous"  # the fake starts in SingleFrame
        assert dev.value("ExposureAuto") == "Off" and dev.value("ExposureTime") == 2500.0
        assert dev.value("GainAuto") == "Off" and dev.value("Gain") == 6.0
        assert dev.value("PixelFormat") == "BayerRG8"
        assert (dev.value("TriggerMode"), dev.value("TriggerSource"), dev.value("TriggerActivation")) == (
            "On",
            "Line2",
            "FallingEdge",
        )
        assert dev.value("BinningHorizontal") == 2 and dev.value("BinningVertical") == 2
        assert (dev.value("OffsetX"), dev.value("OffsetY"), dev.value("Width"), dev.value("Height")) == (8, 4, 32, 24)
        assert dev.value("AcquisitionFrameRateEnable") is True and dev.value("AcquisitionFrameRate") == 25.0
        assert dev.value("StreamBufferHandlingMode") == "NewestOnly"
        assert dev.value("StreamBufferCountMode") == "Manual" and dev.value("StreamBufferCountManual") == 4
        assert len(dev.pool) == 4
        # A hardware pulse gives exactly one frame of the ROI size.
        dev.pulse()
        frame = src.read()
        assert frame is not None and frame.image.shape == (24, 32)
        assert frame.meta["pixel_format"] == "BayerRG8" and frame.camera_serial == "1234"
        assert src.read() is None and src.stats()["timeouts"] == 1


def test_software_trigger_executes_per_frame(pyspin):
    dev = pyspin.fake_add_camera("7")
    with open_source("spinnaker://7", {**FAST, "trigger": "software"}) as src:
        frames = [src.read() for _ in range(3)]
    assert all(f is not None for f in frames)
    assert dev.nodemap.GetNode("TriggerSoftware").fake_sets == ["Execute"] * 3
    assert dev.value("TriggerSource") == "Software"


def test_incomplete_images_are_counted_dropped_and_released(pyspin):
    dev = pyspin.fake_add_camera("1", incomplete_ids=(2, 4))
    with open_source("spinnaker://1", FAST) as src:
        # Bounded reads, not frames(): a leak would starve the pool and loop on timeouts.
        reads = [src.read() for _ in range(7)]
        got = [f for f in reads if f is not None]
        assert [f.meta["device_frame_id"] for f in got] == [1, 3, 5, 6, 7]
        assert [f.frame_id for f in got] == [0, 1, 2, 3, 4]
        assert src.stats()["incomplete"] == 2 and src.stats()["delivered"] == 5
        assert dev.out == set()  # every image, complete or not, was released


def test_images_are_copied_and_released_so_a_small_pool_never_starves(pyspin):
    dev = pyspin.fake_add_camera("1", width=32, height=16)
    with open_source("spinnaker://1", {**FAST, "buffer_count": 2}) as src:
        frames = [src.read() for _ in range(20)]
        assert all(f is not None for f in frames)
        assert dev.starved == 0 and dev.out == set()
    # Released buffers are overwritten by the driver; our frames kept their own copy.
    for f in frames:
        assert np.array_equal(f.image, expected_pattern(16, 32, f.meta["device_frame_id"]))
    stamps = [f.timestamp_ns for f in frames]
    assert stamps == sorted(stamps)
    assert dev.leaked_at_end == 0


def test_frames_the_driver_dropped_are_counted(pyspin):
    dev = pyspin.fake_add_camera("1")
    with open_source("spinnaker://1", FAST) as src:
        assert src.read().meta["device_frame_id"] == 1
        dev.frame_id += 3  # NewestOnly: three buffers were overwritten before we asked
        assert src.read().meta["device_frame_id"] == 5
        assert src.stats()["camera_skipped"] == 3


def test_timeouts_are_bounded_and_counted(pyspin):
    dev = pyspin.fake_add_camera("1")
    dev.stall = 3
    with open_source("spinnaker://1", {"timeout_ms": 30}) as src:
        t0 = time.monotonic()
        results = [src.read() for _ in range(3)]
        elapsed = time.monotonic() - t0
        assert results == [None, None, None]
        assert src.stats()["timeouts"] == 3
        assert 0.08 <= elapsed < 1.0
        assert src.read() is not None  # the camera delivers again; nothing was torn down
        assert src.stats()["reconnects"] == 0


def test_close_from_another_thread_stops_a_waiting_loop(pyspin):
    pyspin.fake_add_camera("1")
    src = open_source("spinnaker://1", {"timeout_ms": 20, "trigger": "hardware"})  # no pulses: only timeouts
    closer = threading.Timer(0.15, src.close)
    closer.start()
    t0 = time.monotonic()
    assert list(src.frames()) == []
    closer.join()
    assert time.monotonic() - t0 < 2.0
    assert src.stats()["timeouts"] >= 2
    assert not pyspin.fake_system_alive()


def test_device_loss_reconnects_with_backoff(pyspin):
    dev = pyspin.fake_add_camera("42", lose_after=3, absent_for=2)
    with open_source("spinnaker://42", {**FAST, "exposure_us": 1000.0}) as src:
        got = [f for _, f in zip(range(6), src.frames())]
        stats = src.stats()
    assert [f.frame_id for f in got] == list(range(6))
    assert stats["device_lost"] == 1 and stats["reconnects"] == 1
    assert [c for c in pyspin.fake_calls if c[0] == "Init"] == [("Init", "42")] * 2
    # The re-opened camera was configured again, not left at its power-on defaults.
    assert dev.value("ExposureTime") == 1000.0 and dev.value("StreamBufferHandlingMode") == "NewestOnly"
    assert lifecycle_tail(pyspin.fake_calls)[-4:] == ["EndAcquisition", "DeInit", "CameraList.Clear", "ReleaseInstance"]
    assert not pyspin.fake_system_alive()


def test_device_loss_without_reconnect_is_one_error(pyspin):
    pyspin.fake_add_camera("42", lose_after=1)
    with open_source("spinnaker://42", {**FAST, "reconnect": False}) as src:
        assert src.read() is not None
        with pytest.raises(SourceError) as err:
            src.read()
    assert "reconnect is off" in str(err.value) and "\n" not in str(err.value)
    assert not pyspin.fake_system_alive()


def test_device_that_never_returns_fails_after_the_attempts(pyspin):
    pyspin.fake_add_camera("42", lose_after=1, absent_for=1000)
    with open_source("spinnaker://42", {**FAST, "reconnect_attempts": 3}) as src:
        src.read()
        with pytest.raises(SourceError, match="3 reconnect attempts failed"):
            src.read()
        assert src.stats()["device_lost"] == 1 and src.stats()["reconnects"] == 0
    assert not pyspin.fake_system_alive()


def test_close_order_and_idempotent(pyspin):
    pyspin.fake_add_camera("5")
    src = open_source("spinnaker://5", FAST)
    frames = src.frames()
    assert next(frames) is not None  # leave the generator suspended: it must not pin the camera
    src.close()
    tail = lifecycle_tail(pyspin.fake_calls)
    assert tail == ["EndAcquisition", "DeInit", "CameraList.Clear", "ReleaseInstance"]
    assert pyspin.fake_live_camera_refs() == 0 and not pyspin.fake_system_alive()
    calls = list(pyspin.fake_calls)
    src.close()
    assert pyspin.fake_calls == calls
    assert list(frames) == []


def test_first_camera_when_no_serial(pyspin):
    pyspin.fake_add_camera("A1")
    pyspin.fake_add_camera("B2")
    with open_source("spinnaker://", FAST) as src:
        frame = src.read()
    assert src.camera_serial == "A1" and frame is not None and frame.camera_serial == "A1"


@pytest.mark.parametrize(
    "uri, options, message",
    [
        ("spinnaker://999", {}, "no camera with serial 999 (found: 1)"),
        ("spinnaker://1", {"exposure_us": 1e9}, "ExposureTime=1000000000.0 is outside the camera's range"),
        (
            "spinnaker://1",
            {"pixel_format": "BayerGB12p"},
            "PixelFormat cannot be 'BayerGB12p' on this camera (available: BayerRG8, Mono8, RGB8)",
        ),
        ("spinnaker://1", {"roi": [0, 0, 30, 16]}, "Width=30 is not allowed (range [16, 64], step 4)"),
        ("spinnaker://1", {"trigger_line": "Line7", "trigger": "hardware"}, "TriggerSource cannot be 'Line7'"),
    ],
)
def test_bad_requests_fail_in_one_line_and_release_the_system(pyspin, uri, options, message):
    pyspin.fake_add_camera("1")
    with pytest.raises(SourceError) as err:
        open_source(uri, options)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not pyspin.fake_system_alive() and pyspin.fake_live_camera_refs() == 0


def test_no_camera_at_all(pyspin):
    with pytest.raises(SourceError, match="no Spinnaker camera found"):
        open_source("spinnaker://")
    assert not pyspin.fake_system_alive()


def test_missing_pyspin_is_one_line_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "PySpin", None)  # import PySpin -> ImportError
    src = make_source("spinnaker://123")  # building touches nothing
    with pytest.raises(MissingDependency) as err:
        src.open()
    text = str(err.value)
    assert "\n" not in text
    assert "Spinnaker SDK" in text and "PyPI's 'pyspin' is an unrelated package" in text
    with pytest.raises(MissingDependency):
        open_source("spinnaker://123")


def test_close_during_a_long_reconnect_backoff_returns_promptly(pyspin):
    pyspin.fake_add_camera("9", lose_after=1, absent_for=1000)
    src = open_source("spinnaker://9", {"timeout_ms": 20, "reconnect_backoff_s": 20.0})
    assert src.read() is not None
    closer = threading.Timer(0.2, src.close)
    closer.start()
    t0 = time.monotonic()
    assert src.read() is None  # loses the camera, starts backing off, is closed meanwhile
    closer.join()
    assert time.monotonic() - t0 < 3.0
    assert not pyspin.fake_system_alive()


def test_missing_pyspin_through_clipinspect_run(monkeypatch, capsys, toy_bundle):
    from edge_runtime.cli import main

    monkeypatch.setitem(sys.modules, "PySpin", None)
    rc = main(
        [
            "run",
            "--bundle",
            str(toy_bundle.root),
            "--source",
            "spinnaker://123",
            "--publish",
            "stdout://",
            "--max-frames",
            "1",
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2
    assert len(err) == 1 and "PySpin" in err[0] and "unrelated package" in err[0]
