"""What every frame source shares: life cycle, counters, frame numbering, pacing."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from edge_runtime.errors import SourceError
from edge_runtime.frames import Frame, Rejected
from edge_runtime.sources.options import SourceOptions

log = logging.getLogger(__name__)

# Source stat keys -> the reason code a record carries (edge_runtime/verdict.py REASONS).
REJECT_REASONS = {
    "corrupt": "undecodable",
    "empty": "empty_file",
    "huge": "image_too_large",
    "missing": "file_missing",
    "incomplete": "incomplete_image",
    "bad_frame": "bad_frame",
}

# Counters every source reports, even when zero, so dashboards see a stable set of keys.
COMMON_STATS = ("delivered", "timeouts", "reconnects")


class SourceBase:
    """Template for sources: subclasses implement `_open`, `_grab` and `_close`.

    `_grab()` returns one Frame, None when nothing usable arrived in time (already
    counted), or raises `EndOfStream` when the source has ended. `close()` may be
    called from another thread: it waits for the grab in progress (bounded by timeout_ms)
    and is idempotent.
    """

    stat_keys: tuple[str, ...] = ()
    # Options this source applies; any other option set away from its default is warned about.
    applies: frozenset[str] = frozenset()

    def __init__(self, uri: str, options: SourceOptions) -> None:
        self.uri = uri
        self.options = options
        self.camera_serial = ""
        self._counts: Counter[str] = Counter({k: 0 for k in COMMON_STATS + self.stat_keys})
        self._lock = threading.RLock()
        self._opened = False
        self._closed = False
        self._next_id = 0
        self.ended = False
        # Rejected inputs waiting to be handed out by events(); only collected (and numbered)
        # while a consumer iterates events(), so frames() keeps its consecutive ids.
        self._want_rejects = False
        self._rejected: deque[Rejected] = deque()

    # -- life cycle -------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            if self._closed:
                raise SourceError(f"{self.uri}: source was closed; open a new one")
            if self._opened:
                return
            self._warn_unapplied()
            self._open()
            self._opened = True

    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends or is closed (possibly from another thread).
        Unusable inputs are only counted in stats(); frame ids stay consecutive."""
        for item in self._iterate(False):
            yield item  # type: ignore[misc]

    def events(self) -> Iterator[Frame | Rejected]:
        """Like frames(), but every input is accounted for: an input that cannot be used
        (undecodable, incomplete, ...) comes out as a `Rejected` with its own frame id and
        reason, in arrival order, so the pipeline can publish a record for it."""
        return self._iterate(True)

    def _iterate(self, with_rejects: bool) -> Iterator[Frame | Rejected]:
        self._want_rejects = with_rejects
        with self._lock:
            if not self._closed:
                self.open()
        while not self._closed and not self.ended:
            frame = self.read()
            while self._rejected:
                yield self._rejected.popleft()
            if frame is not None:
                yield frame
        while self._rejected:
            yield self._rejected.popleft()

    def read(self) -> Frame | None:
        """One bounded grab: a Frame, or None when nothing usable arrived within timeout_ms
        (timeouts, incomplete or corrupt frames are counted in stats()) or the source has
        ended (`ended` is then True) or was closed."""
        with self._lock:
            if self._closed or self.ended:
                return None
            self.open()
            try:
                return self._grab()
            except EndOfStream:
                self.ended = True
                return None

    def close(self) -> None:
        self._closed = True  # seen by frames() before its next grab, without the lock
        with self._lock:
            if self._opened:
                self._opened = False
                self._close()

    def stats(self) -> Mapping[str, int]:
        return dict(self._counts)

    def __enter__(self) -> "SourceBase":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # -- for subclasses ------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self) -> Frame | None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def count(self, key: str, n: int = 1) -> None:
        self._counts[key] += n

    def reject(self, reason: str, detail: str, timestamp_ns: int | None = None, **meta: Any) -> None:
        """Account for an input that cannot be used: counted under `reason` in stats() and,
        while events() is being iterated, queued as a numbered `Rejected`."""
        self._counts[reason] += 1
        if not self._want_rejects:
            return
        self._rejected.append(
            Rejected(
                frame_id=self._next_id,
                timestamp_ns=time.monotonic_ns() if timestamp_ns is None else timestamp_ns,
                camera_serial=self.camera_serial,
                reason=REJECT_REASONS.get(reason, reason),
                detail=detail,
                meta={"source": self.uri, **meta},
            )
        )
        self._next_id += 1

    def make_frame(self, image: np.ndarray, pixel_format: str, timestamp_ns: int | None = None, **meta: Any) -> Frame:
        frame = Frame(
            image=image,
            timestamp_ns=time.monotonic_ns() if timestamp_ns is None else timestamp_ns,
            frame_id=self._next_id,
            camera_serial=self.camera_serial,
            meta={"pixel_format": pixel_format, "source": self.uri, **meta},
        )
        self._next_id += 1
        self._counts["delivered"] += 1
        return frame

    def _warn_unapplied(self) -> None:
        defaults = SourceOptions()
        for name in SourceOptions.__dataclass_fields__:
            if name not in self.applies and getattr(self.options, name) != getattr(defaults, name):
                log.warning("%s: option '%s' is not applied by %s sources", self.uri, name, type(self).__name__)


class EndOfStream(Exception):
    """Raised by `_grab` when the source has no more frames (end of file, count reached)."""


class Pacer:
    """Holds a loop to `fps` on the monotonic clock (no drift: slots are absolute)."""

    def __init__(self, fps: float | None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self._next is None:
            self._next = now
        delay = self._next - now
        if delay > 0:
            self._sleep(delay)
        # If we fell behind by more than one period, do not try to catch up with a burst.
        self._next = max(self._next + self.period, time.monotonic() - self.period)


def retry_with_backoff(uri: str, options: SourceOptions, attempt_open: Callable[[], None], is_closed: Callable[[], bool]) -> None:
    """Call `attempt_open` until it succeeds, waiting options.backoff(i) before try i.

    Raises SourceError naming the URI when every attempt failed or reconnecting is off."""
    if not options.reconnect or options.reconnect_attempts == 0:
        raise SourceError(f"{uri}: device lost and reconnect is off")
    last = ""
    for attempt in range(options.reconnect_attempts):
        if is_closed():
            return
        delay = options.backoff(attempt)
        log.warning("%s: reconnect attempt %d/%d in %.2f s", uri, attempt + 1, options.reconnect_attempts, delay)
        # Sleep in slices: close() from another thread must not wait out a long backoff.
        end = time.monotonic() + delay
        while not is_closed() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        if is_closed():
            return
        try:
            attempt_open()
            log.warning("%s: reconnected", uri)
            return
        except Exception as exc:  # SDK exceptions have no common base we can import here
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("%s: reconnect attempt %d failed: %s", uri, attempt + 1, last)
    raise SourceError(f"{uri}: device lost; {options.reconnect_attempts} reconnect attempts failed (last: {last})")
