"""Latency recording: per-stage percentiles, frames/s and drop counters, in bounded memory.

A line runs for weeks, so nothing here grows with the number of frames. Per stage the recorder
keeps:

* count, sum (for the mean) and max over the whole run: exact;
* a uniform *reservoir sample* (Vitter's algorithm R) of at most `window` latencies drawn from
  the whole run: percentiles are computed from it. Until `window` frames have been seen it
  holds every sample (exact percentiles, as the bench needs); after that every frame of the run
  has the same chance `window/count` of being in it. With the default 10,000 samples the rank
  error of p99 is about ±0.1 percentage points (binomial standard error sqrt(p(1-p)/window));
  memory is 8 bytes per sample (a compact `array('d')`), 80 KB per stage, allocated once.
* a ring of the most recent `recent` latencies (default 1024) for the periodic stats line,
  which describes the last interval rather than the whole run.
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 99)
DEFAULT_WINDOW = 10_000
DEFAULT_RECENT = 1024


@dataclass(frozen=True)
class StageSummary:
    """One stage's latency figures in ms, as `bench` prints them and the status record carries them."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        """The figures rounded to 0.1 µs, for JSON reports."""
        return {
            "count": self.count,
            "mean_ms": round(self.mean_ms, 4),
            "p50_ms": round(self.p50_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "max_ms": round(self.max_ms, 4),
        }


def summarize(
    samples_ms: Iterable[float], count: int | None = None, max_ms: float | None = None, mean_ms: float | None = None
) -> StageSummary:
    """Percentiles of a set of latencies in ms (linear interpolation, numpy's default).
    `count`, `max_ms` and `mean_ms` override what the samples say (exact whole-run figures
    when the samples are a reservoir).

    Returns:
        The summary; every figure is NaN (count 0 or `count`) when there are no samples.
    """
    arr = np.asarray(samples_ms if isinstance(samples_ms, (np.ndarray, array)) else list(samples_ms), dtype=np.float64)
    if arr.size == 0:
        return StageSummary(count or 0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
    p50, p90, p99 = np.percentile(arr, PERCENTILES)
    return StageSummary(
        count=int(arr.size if count is None else count),
        mean_ms=float(arr.mean() if mean_ms is None else mean_ms),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(arr.max() if max_ms is None else max(max_ms, arr.max())),
    )


class Reservoir:
    """A uniform sample of at most `size` values from a stream of any length (algorithm R).
    Seeded, so two runs that see the same stream keep the same sample."""

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError("reservoir size must be >= 1")
        self.size = size
        self.seen = 0
        self._values = array("d")
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        """Offer one value; it is kept with probability `size / seen` once the sample is full."""
        self.seen += 1
        if len(self._values) < self.size:
            self._values.append(value)
            return
        j = self._rng.randrange(self.seen)
        if j < self.size:
            self._values[j] = value

    def values(self) -> np.ndarray:
        """A copy of the kept values (arrival order until the sample first fills up)."""
        return np.frombuffer(self._values, dtype=np.float64).copy() if self._values else np.empty(0)

    def __len__(self) -> int:
        return len(self._values)


class _Stage:
    __slots__ = ("reservoir", "recent", "count", "total", "max")

    def __init__(self, window: int, recent: int) -> None:
        self.reservoir = Reservoir(window)
        self.recent: deque[float] = deque(maxlen=recent)
        self.count = 0
        self.total = 0.0
        self.max = float("-inf")

    def add(self, ms: float) -> None:
        self.reservoir.add(ms)
        self.recent.append(ms)
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)


class LatencyRecorder:
    """Per-stage latencies, fps and event counters of one run (see the module docstring).

    Thread-safe: the inference and publish threads both record into it. Memory is bounded
    by `window` + `recent` samples per stage, whatever the run's length.

    Args:
        window: reservoir size per stage, the sample percentiles are computed from.
        recent: how many latest values per stage the periodic stats line can see.

    Raises:
        ValueError: `window` or `recent` below 1.
    """

    def __init__(self, window: int = DEFAULT_WINDOW, recent: int = DEFAULT_RECENT) -> None:
        if window < 1 or recent < 1:
            raise ValueError("window and recent must be >= 1")
        self._window = window
        self._recent = recent
        self._lock = threading.Lock()
        self._stages: dict[str, _Stage] = {}
        self._counters: dict[str, int] = {}
        self._frames = 0
        self._t0 = time.monotonic()
        self._t_first: float | None = None
        self._t_last: float | None = None

    @property
    def window(self) -> int:
        """The reservoir size per stage (reported with the percentiles so readers know their precision)."""
        return self._window

    def record(self, stages_ms: Mapping[str, float]) -> None:
        """One frame's stage latencies (ms); also counts a completed frame for fps.
        SKIPPED/ERROR records (a `RecordStages` mapping) are counted apart: they are not
        judged frames, so they stay out of the latency percentiles and fps."""
        if isinstance(stages_ms, RecordStages):
            self.count("records_published")
            return
        now = time.monotonic()
        with self._lock:
            for stage, ms in stages_ms.items():
                st = self._stages.get(stage)
                if st is None:
                    st = self._stages[stage] = _Stage(self._window, self._recent)
                st.add(float(ms))
            self._frames += 1
            if self._t_first is None:
                self._t_first = now
            self._t_last = now

    def count(self, counter: str, n: int = 1) -> None:
        """Add `n` to the named event counter (drops, skips, reconnects...); counters starting with "drop" show in the stats line."""
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + n

    @property
    def frames(self) -> int:
        """Judged frames recorded so far (SKIPPED/ERROR records not included)."""
        with self._lock:
            return self._frames

    def counters(self) -> dict[str, int]:
        """A copy of every event counter."""
        with self._lock:
            return dict(self._counters)

    def stages(self) -> list[str]:
        """The stage names seen so far, in first-seen order."""
        with self._lock:
            return list(self._stages)

    def samples(self, stage: str) -> np.ndarray:
        """The kept samples of `stage`: every sample while fewer than `window` were
        recorded (in arrival order), else the uniform reservoir."""
        with self._lock:
            st = self._stages.get(stage)
            return st.reservoir.values() if st is not None else np.empty(0)

    def recent(self, stage: str, n: int | None = None) -> np.ndarray:
        """The last `n` (at most `recent`) samples of `stage`, oldest first."""
        with self._lock:
            st = self._stages.get(stage)
            if st is None:
                return np.empty(0)
            vals = np.fromiter(st.recent, dtype=np.float64, count=len(st.recent))
        return vals[-n:] if n is not None and 0 < n < vals.size else vals

    def summary(self, stage: str) -> StageSummary:
        """Whole-run figures for `stage`: exact count, mean and max, percentiles from the reservoir (NaN if never recorded)."""
        with self._lock:
            st = self._stages.get(stage)
            if st is None:
                return summarize(())
            values = st.reservoir.values()
            count, total, mx = st.count, st.total, st.max
        return summarize(values, count, mx, total / count if count else None)

    def fps(self) -> float:
        """Completed frames per second between the first and the last completion."""
        with self._lock:
            if self._frames < 2 or self._t_first is None or self._t_last is None or self._t_last <= self._t_first:
                return 0.0
            return (self._frames - 1) / (self._t_last - self._t_first)

    def snapshot(self) -> dict[str, object]:
        """The whole recorder as JSON-ready data: frames, fps, per-stage summaries, counters and the sample kind and size."""
        return {
            "frames": self.frames,
            "fps": round(self.fps(), 3),
            "stages": {s: self.summary(s).as_dict() for s in self.stages()},
            "counters": self.counters(),
            "latency_sample": {"kind": "reservoir", "size": self._window},
        }


class RecordStages(dict):
    """Stage timings of a SKIPPED/ERROR record travelling the publish path: a plain dict
    that tells `LatencyRecorder.record` this was not a judged frame."""


class IntervalMeter:
    """fps and p50s since the previous `tick`, for the periodic stats log line."""

    def __init__(self, recorder: LatencyRecorder) -> None:
        self._rec = recorder
        self._last_frames = recorder.frames
        self._last_t = time.monotonic()
        self.last_fps = 0.0

    def tick(self, stages: Iterable[str], extra: Mapping[str, object] | None = None) -> str:
        """The stats line for the interval since the last call, and start a new interval.

        Args:
            stages: the stages whose p50 over the interval's frames to show.
            extra: further `key value` pairs appended to the line.

        Returns:
            "fps .. | frames .. | <stage> p50 ..ms | drops .." joined by " | "; `last_fps` is updated too.
        """
        now = time.monotonic()
        frames = self._rec.frames
        new = frames - self._last_frames
        dt = max(now - self._last_t, 1e-9)
        self.last_fps = new / dt
        parts = [f"fps {self.last_fps:.1f}", f"frames {frames}"]
        for stage in stages:
            recent = self._rec.recent(stage, new if new > 0 else None)
            if recent.size:
                parts.append(f"{stage} p50 {np.percentile(recent, 50):.1f}ms")
        counters = self._rec.counters()
        drops = {k: v for k, v in counters.items() if k.startswith("drop")}
        parts.append("drops " + (", ".join(f"{k}={v}" for k, v in sorted(drops.items())) if drops else "0"))
        for key, value in (extra or {}).items():
            parts.append(f"{key} {value}")
        self._last_frames, self._last_t = frames, now
        return " | ".join(parts)
