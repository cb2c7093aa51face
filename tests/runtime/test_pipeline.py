"""The threaded pipeline: ordering, drop policies (counted), back-pressure, stop/drain, errors.

The source and publisher here are minimal in-test implementations of the seams (a list of
frames, a list of verdicts); the backend is the real ONNX Runtime one, slowed with a sleep
where a test needs a slow stage.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_runtime.backends import make_backend
from edge_runtime.errors import ConfigError
from edge_runtime.frames import Frame
from edge_runtime.pipeline import BoundedQueue, Pipeline, PipelineOptions, make_preprocessor
from edge_runtime.postprocess import Postprocessor
from edge_runtime.verdict import validate_verdict


class ListSource:
    uri = "list://"

    def __init__(self, n: int, size=(96, 128), delay_s: float = 0.0) -> None:
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(min(n, 8))]
        self.n, self.delay_s = n, delay_s

    def open(self) -> None: ...

    def frames(self):
        for i in range(self.n):
            if self.delay_s:
                time.sleep(self.delay_s)
            yield Frame(self.images[i % len(self.images)], time.monotonic_ns(), i, "cam0", {"pixel_format": "RGB8"})

    def close(self) -> None: ...

    def stats(self):
        return {}


class ListPublisher:
    uri = "list://"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.verdicts: list[dict] = []
        self.delay_s = delay_s
        self.flushed = 0

    def publish(self, verdict) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.verdicts.append(dict(verdict))

    def flush(self, timeout_s: float = 10.0) -> bool:
        self.flushed += 1
        return True

    def close(self) -> None: ...

    def stats(self):
        return {"published": len(self.verdicts)}


class SlowBackend:
    """The real backend plus a fixed delay (a stand-in for a slower device)."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s, self.name = inner, delay_s, inner.name

    def infer(self, batch):
        time.sleep(self.delay_s)
        return self.inner.infer(batch)

    def describe(self):
        return self.inner.describe()


@pytest.fixture(scope="module")
def backend(toy_bundle):
    b = make_backend("ort-cpu", intra_op_threads=1)
    b.load(toy_bundle, "fp32")
    return b


def _pipeline(bundle, backend, source, publisher, **opts):
    limits = {k: opts.pop(k) for k in ("max_frames", "duration_s") if k in opts}
    options = PipelineOptions(stats_interval_s=0, **opts)
    post = Postprocessor(bundle, backend.describe())
    return Pipeline(source, backend, post, publisher, make_preprocessor(bundle), options, **limits)


@pytest.mark.parametrize("where", ["capture", "inference"])
def test_block_policy_publishes_every_frame_in_order(toy_bundle, backend, where):
    pub = ListPublisher()
    result = _pipeline(
        toy_bundle, backend, ListSource(12), pub, drop_policy="block", inference_queue=2, preprocess_in=where
    ).run()
    assert [v["frame_id"] for v in pub.verdicts] == list(range(12))
    assert result.captured == result.inferred == result.published == 12 and result.dropped == 0
    assert pub.flushed == 1 and result.stop_reason == "source ended"
    for v in pub.verdicts:
        assert validate_verdict(v) == []
        assert set(v["latency_ms"]) == {"capture_wait", "queue", "preprocess", "inference", "postprocess"}
    # The verdict's score is what the backend computes for that frame's preprocessed image.
    x = make_preprocessor(toy_bundle)(next(ListSource(1).frames()))
    assert pub.verdicts[0]["score"] == pytest.approx(float(backend.infer(x[None]).score[0]), abs=1e-6)
    stages = result.stats["stages"]
    assert {"capture_wait", "queue", "preprocess", "inference", "postprocess", "publish", "total"} <= set(stages)
    assert stages["total"]["count"] == 12 and stages["total"]["p50_ms"] >= stages["inference"]["p50_ms"]
    assert result.ok + result.ng == 12


def test_newest_policy_drops_oldest_and_counts(toy_bundle, backend):
    pub = ListPublisher()
    slow = SlowBackend(backend, 0.03)
    result = _pipeline(toy_bundle, slow, ListSource(30), pub, drop_policy="newest", inference_queue=1).run()
    assert result.dropped > 0
    assert result.counters["drops_inference_queue"] == result.dropped
    assert result.captured == 30 and result.published + result.dropped == 30
    ids = [v["frame_id"] for v in pub.verdicts]
    assert ids == sorted(ids) and ids[-1] == 29  # the newest frame is always judged


def test_block_policy_with_slow_backend_never_drops(toy_bundle, backend):
    pub = ListPublisher()
    result = _pipeline(
        toy_bundle, SlowBackend(backend, 0.01), ListSource(15), pub, drop_policy="block", inference_queue=1
    ).run()
    assert result.dropped == 0 and result.published == 15


def test_hand_off_queue_takes_frames_on_demand(toy_bundle, backend):
    pub = ListPublisher()
    result = _pipeline(
        toy_bundle, SlowBackend(backend, 0.02), ListSource(8), pub, drop_policy="block", inference_queue=0
    ).run()
    assert result.published == 8 and result.dropped == 0
    # A frame is captured only when inference is idle, so it never waits a whole inference.
    assert result.stats["stages"]["queue"]["max_ms"] < 15.0


def test_slow_publisher_back_pressure_loses_no_verdict(toy_bundle, backend):
    pub = ListPublisher(delay_s=0.01)
    result = _pipeline(
        toy_bundle, backend, ListSource(20), pub, drop_policy="block", inference_queue=2, publish_queue=1
    ).run()
    assert result.published == 20 and len(pub.verdicts) == 20
    assert result.counters.get("publish_backpressure", 0) > 0


def test_stop_drains_what_was_captured(toy_bundle, backend):
    pub = ListPublisher()
    pipe = _pipeline(
        toy_bundle,
        SlowBackend(backend, 0.01),
        ListSource(10_000, delay_s=0.002),
        pub,
        drop_policy="block",
        inference_queue=4,
    )
    threading.Timer(0.3, pipe.stop, args=("test stop",)).start()
    result = pipe.run()
    assert result.stop_reason == "test stop"
    assert 0 < result.captured < 10_000
    assert result.captured == result.inferred == result.published == len(pub.verdicts)
    assert pub.flushed == 1


def test_max_frames_and_duration_limits(toy_bundle, backend):
    r = _pipeline(toy_bundle, backend, ListSource(100), ListPublisher(), drop_policy="block", max_frames=5).run()
    assert r.captured == 5 and r.published == 5 and "max frames" in r.stop_reason
    r = _pipeline(
        toy_bundle, backend, ListSource(10_000, delay_s=0.005), ListPublisher(), drop_policy="block", duration_s=0.3
    ).run()
    assert "duration" in r.stop_reason and r.wall_s < 3 and r.published == r.captured


def test_backend_error_surfaces_after_publishing_what_was_judged(toy_bundle, backend):
    class FailsOnFifth:
        name = "fails-on-fifth"

        def __init__(self):
            self.calls = 0

        def infer(self, batch):
            self.calls += 1
            if self.calls == 5:
                raise RuntimeError("device lost")
            return backend.infer(batch)

        def describe(self):
            return {"backend": "fails-on-fifth", "precision": "fp32"}

    pub = ListPublisher()
    with pytest.raises(RuntimeError, match="device lost"):
        _pipeline(toy_bundle, FailsOnFifth(), ListSource(10_000), pub, drop_policy="block").run()
    assert [v["frame_id"] for v in pub.verdicts] == [0, 1, 2, 3]
    assert pub.flushed == 1


def test_source_error_still_judges_queued_frames(toy_bundle, backend):
    from edge_runtime.errors import SourceError

    class DyingSource(ListSource):
        def frames(self):
            yield from super().frames()
            raise SourceError("camera unplugged")

    pub = ListPublisher()
    with pytest.raises(SourceError, match="camera unplugged"):
        _pipeline(
            toy_bundle, SlowBackend(backend, 0.005), DyingSource(6), pub, drop_policy="block", inference_queue=4
        ).run()
    assert [v["frame_id"] for v in pub.verdicts] == list(range(6))


def test_publisher_error_surfaces(toy_bundle, backend):
    class Broken(ListPublisher):
        def publish(self, verdict):
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        _pipeline(toy_bundle, backend, ListSource(10_000), Broken(), drop_policy="block").run()


def test_bad_options():
    with pytest.raises(ConfigError, match="hand-off"):
        PipelineOptions(inference_queue=0, drop_policy="newest")
    with pytest.raises(ConfigError, match="publish_queue"):
        PipelineOptions(publish_queue=0)


def test_bounded_queue_newest_evicts_oldest():
    q = BoundedQueue(2, "newest")
    assert q.put(1) is None and q.put(2) is None
    assert q.put(3) == 1
    assert [q.get(), q.get()] == [2, 3]
