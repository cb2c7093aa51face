"""Latency recording: per-stage percentiles, frames/s and drop counters.

Samples are kept in a bounded ring per stage (a line runs for days), so percentiles describe
the most recent `window` frames while counts and max cover the whole run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class StageSummary:
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean_ms": round(self.mean_ms, 4),
            "p50_ms": round(self.p50_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "max_ms": round(self.max_ms, 4),
        }


def summarize(samples_ms: Iterable[float], count: int | None = None, max_ms: float | None = None) -> StageSummary:
    """Percentiles of a set of latencies in ms (linear interpolation, numpy's default)."""
    arr = np.asarray(list(samples_ms), dtype=np.float64)
    if arr.size == 0:
        return StageSummary(count or 0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
    p50, p90, p99 = np.percentile(arr, PERCENTILES)
    return StageSummary(
        count=int(arr.size if count is None else count),
        mean_ms=float(arr.mean()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(arr.max() if max_ms is None else max(max_ms, arr.max())),
    )


class LatencyRecorder:
    """Thread-safe: the inference and publish threads both record into it."""

    def __init__(self, window: int = 100_000) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._window = window
        self._lock = threading.Lock()
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._max: dict[str, float] = {}
        self._counters: dict[str, int] = {}
        self._frames = 0
        self._t0 = time.monotonic()
        self._t_first: float | None = None
        self._t_last: float | None = None

    def record(self, stages_ms: Mapping[str, float]) -> None:
        """One frame's stage latencies (ms); also counts a completed frame for fps."""
        now = time.monotonic()
        with self._lock:
            for stage, ms in stages_ms.items():
                ring = self._samples.get(stage)
                if ring is None:
                    ring = self._samples[stage] = deque(maxlen=self._window)
                ring.append(float(ms))
                self._counts[stage] = self._counts.get(stage, 0) + 1
                self._max[stage] = max(self._max.get(stage, float("-inf")), float(ms))
            self._frames += 1
            if self._t_first is None:
                self._t_first = now
            self._t_last = now

    def count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + n

    @property
    def frames(self) -> int:
        with self._lock:
            return self._frames

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def stages(self) -> list[str]:
        with self._lock:
            return list(self._samples)

    def samples(self, stage: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._samples.get(stage, ()), dtype=np.float64)

    def summary(self, stage: str) -> StageSummary:
        with self._lock:
            ring = list(self._samples.get(stage, ()))
            count = self._counts.get(stage, 0)
            mx = self._max.get(stage)
        return summarize(ring, count, mx)

    def fps(self) -> float:
        """Completed frames per second between the first and the last completion."""
        with self._lock:
            if self._frames < 2 or self._t_first is None or self._t_last is None or self._t_last <= self._t_first:
                return 0.0
            return (self._frames - 1) / (self._t_last - self._t_first)

    def snapshot(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "fps": round(self.fps(), 3),
            "stages": {s: self.summary(s).as_dict() for s in self.stages()},
            "counters": self.counters(),
        }


class IntervalMeter:
    """fps and p50s since the previous `tick`, for the periodic stats log line."""

    def __init__(self, recorder: LatencyRecorder) -> None:
        self._rec = recorder
        self._last_frames = recorder.frames
        self._last_t = time.monotonic()

    def tick(self, stages: Iterable[str]) -> str:
        now = time.monotonic()
        frames = self._rec.frames
        new = frames - self._last_frames
        dt = max(now - self._last_t, 1e-9)
        parts = [f"fps {new / dt:.1f}", f"frames {frames}"]
        for stage in stages:
            s = self._rec.samples(stage)
            if s.size:
                recent = s[-new:] if 0 < new <= s.size else s
                parts.append(f"{stage} p50 {np.percentile(recent, 50):.1f}ms")
        counters = self._rec.counters()
        drops = {k: v for k, v in counters.items() if k.startswith("drop")}
        parts.append("drops " + (", ".join(f"{k}={v}" for k, v in sorted(drops.items())) if drops else "0"))
        self._last_frames, self._last_t = frames, now
        return " | ".join(parts)
