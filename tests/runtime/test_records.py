"""Every frame accounted for: one record per frame id, SKIPPED/ERROR with a reason when a frame
is not judged, and the run goes on (issue 9 item 2).

Real pieces: the ONNX Runtime backend on the toy bundle, the real folder source, the real
jsonl publisher, the PySpin stand-in (tests/fakes/PySpin.py) for camera buffers.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge_runtime.errors import FrameRejected
from edge_runtime.pipeline import Pipeline, PipelineOptions, make_preprocessor
from edge_runtime.postprocess import Postprocessor
from edge_runtime.publish.jsonl import JsonlPublisher
from edge_runtime.sources import open_source
from edge_runtime.verdict import (
    REASONS,
    SCHEMA_VERSION,
    decide,
    make_verdict,
    validate_verdict,
)
from tests.runtime.test_pipeline import ListPublisher, ListSource, SlowBackend

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture(scope="module")
def backend(toy_bundle):
    from edge_runtime.backends import make_backend

    b = make_backend("ort-cpu", intra_op_threads=1)
    b.load(toy_bundle, "fp32")
    return b


def _pipe(bundle, backend, source, publisher, preprocess=None, **opts):
    limits = {k: opts.pop(k) for k in ("max_frames", "duration_s", "station") if k in opts}
    options = PipelineOptions(stats_interval_s=opts.pop("stats_interval_s", 0), **opts)
    post = Postprocessor(bundle, backend.describe())
    return Pipeline(source, backend, post, publisher, preprocess or make_preprocessor(bundle), options, **limits)


def _assert_one_record_per_frame(records, n):
    assert [r["frame_id"] for r in records] == list(range(n))
    for r in records:
        assert validate_verdict(json.loads(json.dumps(r))) == [], r
        if r["verdict"] in ("SKIPPED", "ERROR"):
            assert r["score"] is None and r["reason"] and r["detail"]


def test_newest_policy_drops_become_skipped_records_in_order(toy_bundle, backend):
    pub = ListPublisher()
    result = _pipe(
        toy_bundle, SlowBackend(backend, 0.03), ListSource(30), pub, drop_policy="newest", inference_queue=1
    ).run()
    _assert_one_record_per_frame(pub.verdicts, 30)
    skipped = [r for r in pub.verdicts if r["verdict"] == "SKIPPED"]
    assert result.dropped > 0 and len(skipped) == result.dropped == result.skipped
    assert {r["reason"] for r in skipped} == {"dropped_newest"}
    assert result.records["by_reason"] == {"dropped_newest": result.dropped}
    assert result.published + result.dropped == 30 and result.records["total"] == 30
    # The recorder keeps drop records out of latency and fps.
    assert result.stats["stages"]["total"]["count"] == result.published


def test_drop_records_never_stall_capture(toy_bundle, backend):
    """A publisher that hangs: under `newest` capture still takes every frame, and the drop
    records (markers) wait behind the stuck publish path instead of blocking capture."""
    gate = threading.Event()

    class Hanging(ListPublisher):
        def publish(self, verdict):
            gate.wait(10)
            super().publish(verdict)

    pub = Hanging()
    pipe = _pipe(
        toy_bundle,
        backend,
        ListSource(300, delay_s=0.001),
        pub,
        drop_policy="newest",
        inference_queue=2,
        publish_queue=1,
    )
    runner = threading.Thread(target=lambda: setattr(pipe, "result", pipe.run()))
    runner.start()
    deadline = time.monotonic() + 5
    while pipe.captured < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    captured_while_stuck = pipe.captured
    gate.set()
    runner.join(20)
    assert captured_while_stuck == 300
    _assert_one_record_per_frame(pub.verdicts, 300)
    assert pipe.result.dropped > 250


def test_error_records_that_overflow_behind_a_stuck_inference_are_counted_only_as_lost(toy_bundle, backend):
    gate = threading.Event()
    inner = make_preprocessor(toy_bundle)

    class Stuck:
        name = "stuck"

        def infer(self, batch):
            gate.wait(10)
            return backend.infer(batch)

        def describe(self):
            return backend.describe()

    def only_the_first(frame):  # frame 0 holds inference; every later one is an ERROR record
        if frame.frame_id:
            raise FrameRejected("frame_size_mismatch", "not the bundle's input")
        return inner(frame)

    pub = ListPublisher()
    pipe = _pipe(toy_bundle, Stuck(), ListSource(40), pub, only_the_first, drop_policy="block", max_pending_records=5)
    runner = threading.Thread(target=lambda: setattr(pipe, "result", pipe.run()))
    runner.start()
    deadline = time.monotonic() + 5
    while pipe.captured < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    runner.join(20)
    r = pipe.result
    lost = r.counters["records_lost_overflow"]
    assert lost > 0 and r.records["total"] + lost == 40
    assert r.records["total"] == len(pub.verdicts) and r.errors == len(pub.verdicts) - 1  # counted = published


@pytest.mark.parametrize("where", ["capture", "inference"])
def test_preprocessing_failures_are_error_records_and_the_run_goes_on(toy_bundle, backend, where):
    inner = make_preprocessor(toy_bundle)

    def flaky(frame):
        if frame.frame_id == 2:
            raise FrameRejected("frame_size_mismatch", "frame 96x128 is not the bundle's 4096x2160 raw input")
        if frame.frame_id == 4:
            raise RuntimeError("cv2 exploded")
        return inner(frame)

    pub = ListPublisher()
    bad = ListSource(8)
    bad.images[5] = np.zeros((96, 128, 3), np.uint16)  # wrong dtype: preprocessing refuses it
    result = _pipe(toy_bundle, backend, bad, pub, flaky, drop_policy="block", preprocess_in=where).run()
    _assert_one_record_per_frame(pub.verdicts, 8)
    reasons = {r["frame_id"]: r["reason"] for r in pub.verdicts if r["verdict"] == "ERROR"}
    assert reasons == {2: "frame_size_mismatch", 4: "preprocess_failed", 5: "bad_frame"}
    assert result.errors == 3 and result.captured == 8 and result.inferred == result.published == 5


class _ScoreBackend:
    """The real backend, with the scores of chosen calls replaced (a model that overflows)."""

    def __init__(self, inner, scores):
        self.inner, self.scores, self.calls, self.name = inner, scores, 0, "scripted"

    def infer(self, batch):
        out = self.inner.infer(batch)
        score = self.scores.get(self.calls)
        self.calls += 1
        if score is None:
            return out
        return SimpleNamespace(score=np.array([score], np.float32), anomaly_map=out.anomaly_map)

    def describe(self):
        return self.inner.describe()


def test_nan_inf_and_out_of_range_scores_are_errors_and_the_publisher_accepts_them(toy_bundle, backend, tmp_path):
    out = tmp_path / "v.jsonl"
    pub = JsonlPublisher(f"jsonl://{out}", out)
    scripted = _ScoreBackend(backend, {1: float("nan"), 3: float("inf"), 4: 1.5, 5: -0.2})
    result = _pipe(toy_bundle, scripted, ListSource(8), pub, drop_policy="block").run()
    pub.close()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    _assert_one_record_per_frame(records, 8)
    reasons = {r["frame_id"]: r["reason"] for r in records if r["verdict"] == "ERROR"}
    assert reasons == {1: "score_not_finite", 3: "score_not_finite", 4: "score_out_of_range", 5: "score_out_of_range"}
    assert result.errors == 4 and result.ok + result.ng == 4 and result.published == 8


def test_folder_rejects_take_frame_ids_and_become_error_records(toy_bundle, backend, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    for name in ("a.png", "d.png", "f.jpg"):
        cv2.imwrite(str(folder / name), img)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "c.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "e.png"), img[:20])  # another size than the stream
    pub = ListPublisher()
    with open_source(f"folder://{folder}") as src:
        result = _pipe(toy_bundle, backend, src, pub, drop_policy="block").run()
    _assert_one_record_per_frame(pub.verdicts, 6)
    assert [r["reason"] for r in pub.verdicts] == [None, "undecodable", "empty_file", None, "odd_size", None]
    assert result.source_rejected == 3 and result.published == 3 and result.records["ERROR"] == 3


def test_camera_incomplete_buffers_are_error_records(toy_bundle, backend, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("PySpin", None)
    ps = importlib.import_module("PySpin")
    ps.fake_reset()
    try:
        ps.fake_add_camera("77", width=64, height=48, incomplete_ids=(2, 4))
        pub = ListPublisher()
        with open_source("spinnaker://77", {"pixel_format": "BayerRG8"}) as src:
            result = _pipe(toy_bundle, backend, src, pub, drop_policy="block", max_frames=4).run()
            camera = dict(src.stats())
        _assert_one_record_per_frame(pub.verdicts, 6)
        errors = [r for r in pub.verdicts if r["verdict"] == "ERROR"]
        assert [r["reason"] for r in errors] == ["incomplete_image"] * 2 and camera["incomplete"] == 2
        assert result.captured == 4 and result.source_rejected == 2
    finally:
        sys.modules.pop("PySpin", None)


class _Triggered(ListSource):
    def __init__(self, trigger, n=3):
        super().__init__(n)
        self.options = SimpleNamespace(trigger=trigger)


@pytest.mark.parametrize(
    "trigger, policy, expected",
    [
        ("hardware", "auto", "block"),
        ("off", "auto", "newest"),
        ("software", "auto", "newest"),
        ("hardware", "newest", "newest"),
    ],
)
def test_hardware_trigger_defaults_to_block(toy_bundle, backend, trigger, policy, expected):
    pipe = _pipe(toy_bundle, backend, _Triggered(trigger), ListPublisher(), drop_policy=policy)
    assert pipe.drop_policy == expected


def test_status_is_published_at_start_interval_and_end(toy_bundle, backend):
    class StatusPublisher(ListPublisher):
        def __init__(self):
            super().__init__()
            self.statuses = []

        def publish_status(self, fields):
            self.statuses.append(json.loads(json.dumps(fields)))

    pub = StatusPublisher()
    src = ListSource(40, delay_s=0.01)
    src.stats = lambda: {"delivered": 40, "incomplete": 1, "camera_skipped": 2}
    result = _pipe(
        toy_bundle,
        SlowBackend(backend, 0.02),
        src,
        pub,
        drop_policy="newest",
        inference_queue=1,
        stats_interval_s=0.1,
        station="line1-cam1",
    ).run()
    first, last = pub.statuses[0], pub.statuses[-1]
    assert len(pub.statuses) >= 3
    assert first["station"] == "line1-cam1" and first["bundle_sha256"] == toy_bundle.manifest_sha256
    assert {"model_id", "backend", "precision"} <= set(first) and first["counts"] == {
        "OK": 0,
        "NG": 0,
        "SKIPPED": 0,
        "ERROR": 0,
    }
    assert last["counts"]["SKIPPED"] == result.dropped and sum(last["counts"].values()) == 40
    assert last["camera"] == {"delivered": 40, "incomplete": 1, "camera_skipped": 2}
    assert last["process"]["rss_mb"] > 0 and last["process"]["fds"] > 0 and last["process"]["threads"] >= 1


def test_status_errors_never_stop_the_line(toy_bundle, backend):
    class BrokenStatus(ListPublisher):
        def publish_status(self, fields):
            raise OSError("status topic refused")

    pub = BrokenStatus()
    result = _pipe(toy_bundle, backend, ListSource(5), pub, drop_policy="block").run()
    assert result.published == 5


# -- the verdict schema ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "score, expected",
    [
        (0.2, "OK"),
        (0.5, "NG"),
        (float("nan"), "ERROR"),
        (float("inf"), "ERROR"),
        (-float("inf"), "ERROR"),
        (1.01, "ERROR"),
        (-0.5, "ERROR"),
        (1.0, "NG"),
        (0.0, "OK"),
    ],
)
def test_decide_never_says_ok_for_an_unusable_score(score, expected):
    assert decide(score, 0.5) == expected


def _verdict(score):
    return make_verdict(
        frame_id=1,
        camera_serial="c",
        capture_ts_ns=5,
        score=score,
        threshold=0.5,
        bundle_sha256="x" * 64,
        model_id="m",
        backend="ort-cpu",
        precision="fp32",
        latency_ms={},
    )


def test_schema_v2_validation():
    ok = _verdict(0.1)
    assert ok["schema_version"] == SCHEMA_VERSION == 2 and ok["reason"] is None and validate_verdict(ok) == []
    err = _verdict(float("nan"))
    assert err["verdict"] == "ERROR" and err["score"] is None and validate_verdict(err) == []
    assert not math.isnan(json.loads(json.dumps(err, allow_nan=False))["threshold"])
    assert validate_verdict(err | {"score": 0.3}) == ["'score' must be null for ERROR"]
    assert "a ERROR record needs a reason code" in validate_verdict(err | {"reason": None})
    assert validate_verdict(ok | {"verdict": "MAYBE"}) == ["verdict 'MAYBE' is not OK/NG/SKIPPED/ERROR"]
    # A v1 payload (no reason/detail, OK/NG only) still validates: subscribers can read both.
    v1 = {k: v for k, v in ok.items() if k not in ("reason", "detail")} | {"schema_version": 1}
    assert validate_verdict(v1) == [] and validate_verdict(v1 | {"verdict": "SKIPPED", "score": None}) != []


def test_every_reason_has_a_kind_and_a_meaning():
    for code, (kind, meaning) in REASONS.items():
        assert kind in ("SKIPPED", "ERROR") and meaning and code == code.lower()


def test_camera_buffer_that_cannot_be_read_is_an_error_record_not_a_lost_camera(toy_bundle, backend, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("PySpin", None)
    ps = importlib.import_module("PySpin")
    ps.fake_reset()
    original = ps.Image.GetNDArray

    def unmappable(self):
        if self._frame_id == 3:  # e.g. a packed pixel format GetNDArray cannot map
            raise ps.SpinnakerException(
                "Spinnaker: GetNDArray: pixel format not supported [-1009]", ps.SPINNAKER_ERR_INVALID_PARAMETER
            )
        return original(self)

    monkeypatch.setattr(ps.Image, "GetNDArray", unmappable)
    try:
        ps.fake_add_camera("78", width=64, height=48)
        pub = ListPublisher()
        with open_source("spinnaker://78", {"pixel_format": "BayerRG8"}) as src:
            _pipe(toy_bundle, backend, src, pub, drop_policy="block", max_frames=5).run()
            camera = dict(src.stats())
        _assert_one_record_per_frame(pub.verdicts, 6)
        assert [(r["frame_id"], r["reason"]) for r in pub.verdicts if r["verdict"] == "ERROR"] == [(2, "bad_frame")]
        assert camera["bad_frame"] == 1 and camera["device_lost"] == 0 and camera["reconnects"] == 0
    finally:
        sys.modules.pop("PySpin", None)


class _Component:
    def __init__(self, data, w, h, n=1):
        self.data, self.width, self.height, self.num_components_per_pixel, self.data_format = data, w, h, n, "Mono8"


def _buffer(frame_id, data, w=8, h=4, complete=True):
    """Shaped like a harvesters Buffer (module.is_complete, payload.components[0], frame_id)."""
    return SimpleNamespace(
        frame_id=frame_id,
        timestamp_ns=frame_id * 1000,
        module=SimpleNamespace(is_complete=lambda: complete),
        payload=SimpleNamespace(components=[_Component(data, w, h)]),
    )


def test_gentl_short_payload_incomplete_buffer_and_id_gaps_are_accounted():
    from edge_runtime.sources import make_source

    src = make_source("gentl://?serial=1")
    items = []
    src._want_rejects = True  # what events() sets; buffers are fed to _take directly here
    for buf in (
        _buffer(1, np.arange(32, dtype=np.uint8)),
        _buffer(2, np.arange(10, dtype=np.uint8)),
        _buffer(5, np.arange(32, dtype=np.uint8), complete=False),
        _buffer(6, np.arange(32, dtype=np.uint8)),
    ):
        frame = src._take(buf, 0)
        items.extend(src._rejected)
        src._rejected.clear()
        if frame is not None:
            items.append(frame)
    assert [i.frame_id for i in items] == [0, 1, 2, 3]
    assert [getattr(i, "reason", "frame") for i in items] == ["frame", "bad_frame", "incomplete_image", "frame"]
    stats = src.stats()
    assert stats["camera_skipped"] == 2 and stats["incomplete"] == 1 and stats["bad_frame"] == 1


def test_records_behind_a_stuck_inference_are_bounded_and_counted(toy_bundle, backend):
    gate = threading.Event()

    class Stuck:
        name = "stuck"

        def infer(self, batch):
            gate.wait(10)
            return backend.infer(batch)

        def describe(self):
            return backend.describe()

    pub = ListPublisher()
    pipe = _pipe(
        toy_bundle, Stuck(), ListSource(60), pub, drop_policy="newest", inference_queue=1, max_pending_records=5
    )
    runner = threading.Thread(target=lambda: setattr(pipe, "result", pipe.run()))
    runner.start()
    deadline = time.monotonic() + 5
    while pipe.captured < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pipe._q_in.markers <= 5  # memory stays bounded while inference is stuck
    gate.set()
    runner.join(20)
    r = pipe.result
    lost = r.counters["records_lost_overflow"]
    assert lost > 0 and r.records["total"] + lost == 60 and len(pub.verdicts) == r.records["total"]
    ids = [v["frame_id"] for v in pub.verdicts]
    assert ids == sorted(ids) and ids[-1] == 59
