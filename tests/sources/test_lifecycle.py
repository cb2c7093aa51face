"""The source seam: one table for dispatch, validation and help; one life cycle in SourceBase
(context manager, idempotent close that never raises, a finalizer for sources never closed)."""

from __future__ import annotations

import gc
import logging

import cv2
import numpy as np
import pytest

import edge_runtime.sources as sources
from edge_runtime.errors import SourceError
from edge_runtime.frames import Frame, FrameSource
from edge_runtime.registry import Entry
from edge_runtime.sources import SOURCES, make_source, open_source, parse_uri, uri_help
from edge_runtime.sources.base import EndOfStream, Held, SourceBase
from edge_runtime.sources.gentl import simulator_producer


class CountingSource(SourceBase):
    """A test-only source: `counting://?n=3` yields n tiny frames; its 'device' is a list."""

    OWN_KEYS = ("n",)
    _device = Held()
    released: list[str] = []

    def __init__(self, parsed, options, params):
        super().__init__(parsed.raw, options)
        self.n = int(params.get("n", "3"))
        self._device = None

    @staticmethod
    def release_held(uri, held):
        if held.pop("_device", None) is not None:
            CountingSource.released.append(uri)

    def _open(self):
        self._device = ["open"]

    def _grab(self):
        if self._next_id >= self.n:
            raise EndOfStream
        return self.make_frame(np.zeros((2, 2), np.uint8), "Mono8")

    def _close(self):
        self._device = None


class BrokenClose(CountingSource):
    def _close(self):
        raise RuntimeError("device gone\nwith a second line")


@pytest.fixture
def counting(monkeypatch):
    """SOURCES plus one row for CountingSource: all a new source needs besides its module."""
    CountingSource.released.clear()
    with SOURCES.added(Entry("counting", f"{__name__}:CountingSource", summary="counting://?n=N")):
        yield SOURCES


def test_every_row_loads_a_source_class_with_from_uri():
    assert SOURCES.names() == ["spinnaker", "gentl", "cv", "folder", "synthetic"]
    for entry in SOURCES:
        cls = SOURCES.load(entry.name)
        assert issubclass(cls, SourceBase) and callable(cls.from_uri)
        assert SOURCES.options_type(entry.name) is sources.SourceOptions
    assert SOURCES.load("gst") is SOURCES.load("cv")


def test_messages_help_and_doc_come_from_the_table(counting):
    with pytest.raises(SourceError) as err:
        parse_uri("ftp://camera")
    assert "counting://" in str(err.value) and "gst://" in str(err.value)
    assert "counting://?n=N" in uri_help()
    for entry in SOURCES:  # the module doc is written from the built-in rows at import
        assert entry.summary in sources.__doc__ or entry.name == "counting"


def test_a_new_row_is_all_make_source_needs(counting):
    src = make_source("counting://?n=4")
    assert type(src).__name__ == "CountingSource" and isinstance(src, FrameSource)
    with src:
        assert [f.frame_id for f in src.frames()] == [0, 1, 2, 3]
    with pytest.raises(SourceError, match="unknown query key 'm'"):
        make_source("counting://?m=4")


def test_context_manager_and_idempotent_close(counting):
    with open_source("counting://?n=2") as src:
        assert isinstance(next(src.frames()), Frame)
    src.close()
    src.close()
    with pytest.raises(SourceError, match="was closed"):
        src.open()
    assert CountingSource.released == []  # close() released it; the finalizer had nothing left


def test_close_never_raises_and_frees_what_close_left(counting, monkeypatch, caplog):
    monkeypatch.setattr(counting, "load", lambda name: BrokenClose)
    src = open_source("counting://?n=1")
    with pytest.raises(ValueError, match="the block's own error"), src:
        raise ValueError("the block's own error")  # not hidden by the failing teardown
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "counting://?n=1: close failed: device gone" in warnings
    assert all("\n" not in w for w in warnings)
    assert CountingSource.released == ["counting://?n=1"]  # the finalizer freed what _close left
    src.close()
    assert CountingSource.released == ["counting://?n=1"]


def test_dropped_source_is_released_by_its_finalizer(counting, caplog):
    src = open_source("counting://?n=1")
    del src
    gc.collect()
    assert CountingSource.released == ["counting://?n=1"]
    assert any("left open" in r.getMessage() for r in caplog.records)


def test_dropped_spinnaker_source_deinits_and_releases_the_system(pyspin, caplog):
    dev = pyspin.fake_add_camera("42")
    src = open_source("spinnaker://42", {"timeout_ms": 20})
    assert dev.streaming and src.read() is not None
    del src
    gc.collect()
    tail = [
        c[0] for c in pyspin.fake_calls if c[0] in ("EndAcquisition", "DeInit", "CameraList.Clear", "ReleaseInstance")
    ]
    assert tail == ["EndAcquisition", "DeInit", "CameraList.Clear", "ReleaseInstance"]
    assert not dev.streaming
    assert not any("failed" in r.getMessage() for r in caplog.records)  # ReleaseInstance found no camera alive


def test_closed_spinnaker_source_is_released_once(pyspin, caplog):
    pyspin.fake_add_camera("42")
    with open_source("spinnaker://42", {"timeout_ms": 20}):
        pass
    gc.collect()
    assert [c[0] for c in pyspin.fake_calls].count("ReleaseInstance") == 1
    assert not any("left open" in r.getMessage() for r in caplog.records)


def test_dropped_opencv_source_releases_its_capture(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for _ in range(3):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    src = open_source(f"cv://{path}")
    cap = src._cap
    assert cap.isOpened()
    del src
    gc.collect()
    assert not cap.isOpened()


@pytest.mark.camera
def test_dropped_gentl_source_destroys_the_acquirer():
    cti = simulator_producer()
    if cti is None:
        pytest.skip("no GenTL simulator: needs the genicam wheel (ships viky.cti) and harvesters")
    src = open_source(f"gentl://{cti}", {"timeout_ms": 2000})
    ia = src._ia
    assert ia.is_acquiring()
    del src
    gc.collect()
    assert not ia.is_acquiring() and not ia.is_valid()
