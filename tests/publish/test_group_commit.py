"""Pipeline._publish hands the publisher what has queued up in one publish_many call (group
commit), counts a verdict only after that call returned, and still serves publishers that
only have publish()."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from edge_runtime.frames import Frame
from edge_runtime.pipeline import Pipeline, PipelineOptions
from edge_runtime.verdict import make_verdict


class Frames:
    uri = "list://"

    def __init__(self, n: int) -> None:
        self.n = n

    def open(self) -> None: ...

    def frames(self):
        img = np.zeros((8, 8, 3), np.uint8)
        for i in range(self.n):
            yield Frame(img, time.monotonic_ns(), i, "cam0", {"pixel_format": "RGB8"})

    def close(self) -> None: ...

    def stats(self) -> dict[str, int]:
        return {}


class Scores:
    name = "const"

    def infer(self, batch: Any) -> Any:
        return SimpleNamespace(
            score=np.full(len(batch), 0.1, np.float32), anomaly_map=np.zeros((len(batch), 2, 2), np.float32)
        )

    def describe(self) -> dict[str, str]:
        return {"name": self.name}


def post(frame: Frame, score: float, amap: Any, stages: Any) -> dict[str, Any]:
    return make_verdict(
        frame_id=frame.frame_id,
        camera_serial=frame.camera_serial,
        capture_ts_ns=frame.timestamp_ns,
        score=score,
        threshold=0.5,
        bundle_sha256="0" * 64,
        model_id="m",
        backend="const",
        precision="fp32",
        latency_ms=stages,
    )


class SlowCommit:
    """A publisher whose every call costs like one fsync: batches are what keeps it up."""

    uri = "slow://"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.counted_when_stored: list[int] = []
        self.pipeline: Pipeline | None = None

    def publish(self, verdict: Any) -> None:
        self.publish_many([verdict])

    def publish_many(self, verdicts: Any) -> None:
        if self.pipeline is not None:
            self.counted_when_stored.append(self.pipeline.published)
        time.sleep(0.01)
        self.batches.append([v["frame_id"] for v in verdicts])

    def publish_status(self, status: Any) -> None: ...

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def close(self) -> None: ...

    def stats(self) -> dict[str, int]:
        return {}


def _run(publisher: Any, n: int) -> Any:
    options = PipelineOptions(drop_policy="block", inference_queue=8, stats_interval_s=0)
    pipe = Pipeline(Frames(n), Scores(), post, publisher, lambda f: f.image, options)
    if isinstance(publisher, SlowCommit):
        publisher.pipeline = pipe
    return pipe.run()


def test_queued_verdicts_go_in_one_call_in_order() -> None:
    pub = SlowCommit()
    result = _run(pub, 300)
    assert result.published == 300
    assert [f for b in pub.batches for f in b] == list(range(300))
    assert max(len(b) for b in pub.batches) > 1 and len(pub.batches) < 150
    # Counted only after the call returned: at each call the count equals what was stored before.
    stored = 0
    for before, batch in zip(pub.counted_when_stored, pub.batches):
        assert before == stored
        stored += len(batch)


def test_a_publisher_with_publish_only_is_served_one_by_one() -> None:
    class One:
        uri = "one://"

        def __init__(self) -> None:
            self.ids: list[int] = []

        def publish(self, verdict: Any) -> None:
            self.ids.append(verdict["frame_id"])

        def flush(self, timeout_s: float = 10.0) -> bool:
            return True

        def close(self) -> None: ...

    pub = One()
    assert _run(pub, 50).published == 50
    assert pub.ids == list(range(50))
