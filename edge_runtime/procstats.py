"""Process health for soak runs and the status topic: resident memory, open files, threads.

Read from /proc/self on Linux (the Jetson and CI); elsewhere only what `resource` offers.
`ProcessMonitor` keeps the first, the post-warm-up, the latest and the peak sample plus a
bounded, evenly thinned history, so a week-long run's summary stays small.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

_PROC = Path("/proc/self")


def sample_process() -> dict[str, float | int | None]:
    """{"rss_mb", "fds", "threads"} of this process now (None where the OS does not say)."""
    rss_mb: float | None = None
    threads: int | None = None
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_mb = int(line.split()[1]) / 1024.0  # kB
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    except OSError:
        import resource

        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # peak, not current
        threads = threading.active_count()
    try:
        fds: int | None = len(os.listdir(_PROC / "fd"))
    except OSError:
        fds = None
    return {"rss_mb": None if rss_mb is None else round(rss_mb, 2), "fds": fds, "threads": threads}


class ProcessMonitor:
    """Samples on `sample()`; the sample taken first at or after `warmup_s` is the baseline
    that growth is measured against (start-up allocations are not a leak)."""

    def __init__(self, warmup_s: float = 30.0, max_history: int = 240) -> None:
        self.warmup_s = warmup_s
        self.max_history = max(2, max_history)
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self.start = self._stamp(sample_process())
        self.warm: dict[str, Any] | None = None
        self.latest = self.start
        self.peak_rss_mb = self.start["rss_mb"]
        self.max_fds = self.start["fds"]
        self.max_threads = self.start["threads"]
        self._history: list[dict[str, Any]] = [self.start]
        self._every = 1  # keep every n-th sample; doubles when the history is full
        self._n = 0

    def _stamp(self, s: dict[str, Any]) -> dict[str, Any]:
        return {"t_s": round(time.monotonic() - self._t0, 1), **s}

    def sample(self) -> dict[str, Any]:
        """Take one sample now, update latest/peaks/warm baseline and the thinned history, and return it."""
        s = self._stamp(sample_process())
        with self._lock:
            self.latest = s
            if self.warm is None and s["t_s"] >= self.warmup_s:
                self.warm = s
            self.peak_rss_mb = _max(self.peak_rss_mb, s["rss_mb"])
            self.max_fds = _max(self.max_fds, s["fds"])
            self.max_threads = _max(self.max_threads, s["threads"])
            self._n += 1
            if self._n % self._every == 0:
                self._history.append(s)
                if len(self._history) > self.max_history:
                    self._history = self._history[::2]
                    self._every *= 2
        return s

    def rss_growth_pct(self) -> float | None:
        """Growth of RSS from the warm-up sample (or the first one) to the latest, in %."""
        base = (self.warm or self.start)["rss_mb"]
        last = self.latest["rss_mb"]
        if not base or last is None:
            return None
        return round(100.0 * (last - base) / base, 2)

    def summary(self) -> dict[str, Any]:
        """First, warm and last samples, peaks, RSS growth after warm-up and the history, JSON-ready (the soak report)."""
        with self._lock:
            return {
                "start": self.start,
                "warm": self.warm,
                "end": self.latest,
                "warmup_s": self.warmup_s,
                "peak_rss_mb": self.peak_rss_mb,
                "max_fds": self.max_fds,
                "max_threads": self.max_threads,
                "rss_growth_after_warmup_pct": self.rss_growth_pct(),
                "history": list(self._history),
            }


def _max(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
