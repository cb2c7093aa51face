"""What every frame source shares: life cycle, counters, frame numbering, pacing.

Life cycle (one place for every source): `from_uri` builds (nothing is touched), `open()`
connects, `frames()`/`events()`/`read()` deliver, `close()` disconnects. `close()` is
idempotent, may come from another thread, and never raises: a teardown step that fails is
logged as one warning line. What must be released even when a source is dropped without
`close()` (a camera handle, an SDK system, a capture) is declared as a `Held` attribute and
freed by the class's `release_held`, which a `weakref.finalize` calls at garbage collection or
at interpreter exit, as harvesters does for its acquirers.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.errors import SourceError, first_line
from edge_runtime.frames import Frame, Rejected
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.uri import SourceUri, merge_options, parse_uri

if TYPE_CHECKING:
    from typing_extensions import Self

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


class Held:
    """Declares a source attribute that holds something to release even without `close()`.

    The value lives in the source's `_held` dict rather than on the instance, so the
    finalizer can keep that dict (and free what is in it) without keeping the source alive.
    Reading an attribute that was never set gives None.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._held.get(self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        obj._held[self.name] = value


def quietly(uri: str, step: str, call: Callable[[], object]) -> None:
    """Run one teardown step; a failure is logged as one warning line, never raised.

    Args:
        uri: the source's URI, for the message.
        step: what is being done, e.g. "DeInit".
        call: the step.
    """
    try:
        call()
    except Exception as exc:  # SDK exceptions have no common base we can import here
        log.warning("%s: %s failed: %s", uri, step, first_line(exc))


def _release_leftovers(uri: str, held: dict[str, Any], release: Callable[[str, dict[str, Any]], None]) -> None:
    """The finalizer: free what `close()` did not (the source was dropped or its close failed)."""
    left = sorted(name for name, value in held.items() if value is not None)
    if not left:
        return
    log.warning("%s: releasing %s left open (source not closed cleanly)", uri, ", ".join(left))
    quietly(uri, "release", lambda: release(uri, held))
    held.clear()


class SourceBase:
    """Template for sources: subclasses implement `_open`, `_grab` and `_close`.

    `_grab()` returns one Frame, None when nothing usable arrived in time (already
    counted), or raises `EndOfStream` when the source has ended. `close()` may be
    called from another thread: it waits for the grab in progress (bounded by timeout_ms),
    is idempotent and never raises.

    A subclass declares what must be freed even if it is never closed as `Held` class
    attributes and frees them in a `release_held` staticmethod. A subclass whose URI has
    query keys of its own lists them in `OWN_KEYS` and takes them as a third constructor
    argument (a dict of text values).

    Args:
        uri: the source URI, for messages and frame meta.
        options: the merged options.

    Attributes:
        uri: as given.
        options: as given.
        camera_serial: what frames name as their camera.
        ended: True once the source has no more frames.
    """

    stat_keys: tuple[str, ...] = ()
    # Options this source applies; any other option set away from its default is warned about.
    applies: frozenset[str] = frozenset()
    # Query keys that are the source's own (not SourceOptions fields).
    OWN_KEYS: tuple[str, ...] = ()

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
        self._held: dict[str, Any] = {}
        self._finalizer = weakref.finalize(self, _release_leftovers, uri, self._held, type(self).release_held)

    @classmethod
    def from_uri(cls, uri: str | SourceUri, options: SourceOptions | Mapping[str, Any] | None = None) -> Self:
        """Build the source for `uri` without opening it (the seam's one constructor).

        Args:
            uri: the URI, or one already parsed by `parse_uri`.
            options: SourceOptions or a mapping of their fields; the URI's query overrides them.

        Returns:
            The source, not opened.

        Raises:
            SourceError: bad URI, unknown query key or bad option value (one line).
        """
        parsed = uri if isinstance(uri, SourceUri) else parse_uri(uri)
        merged, own = merge_options(parsed, options, cls.OWN_KEYS)
        if cls.OWN_KEYS:
            return cls(parsed, merged, own)  # type: ignore[call-arg]
        return cls(parsed, merged)  # type: ignore[call-arg, arg-type]

    @staticmethod
    def release_held(uri: str, held: dict[str, Any]) -> None:
        """Free what the `Held` attributes still hold (at GC or exit if never closed).

        Sources with `Held` attributes override this; it must not refer to the source itself.

        Args:
            uri: the source's URI, for messages.
            held: attribute name -> value for every `Held` attribute set so far.
        """

    # -- life cycle -------------------------------------------------------------------
    def open(self) -> None:
        """Connect to the device or file; a second call does nothing.

        Raises:
            SourceError: the source was closed, or cannot be opened (one line).
            MissingDependency: the vendor SDK or package is not installed.
        """
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

        Unusable inputs are only counted in stats(); frame ids stay consecutive.

        Raises:
            SourceError: the source failed for good (e.g. device lost, reconnects exhausted).
        """
        yield from self._iterate(False)  # type: ignore[misc]

    def events(self) -> Iterator[Frame | Rejected]:
        """Like frames(), but every input is accounted for.

        An input that cannot be used (undecodable, incomplete, ...) comes out as a `Rejected`
        with its own frame id and reason, in arrival order, so the pipeline can publish a
        record for it.

        Returns:
            An iterator of frames and rejects.
        """
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
        """One bounded grab.

        Returns:
            A Frame, or None when nothing usable arrived within timeout_ms (timeouts,
            incomplete or corrupt frames are counted in stats()), or the source has ended
            (`ended` is then True) or was closed.
        """
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
        """Disconnect and release everything; idempotent, safe from another thread.

        Never raises: a failing teardown step is logged as one warning line, and anything
        `_close` left held is freed by `release_held`.
        """
        self._closed = True  # seen by frames() before its next grab, without the lock
        with self._lock:
            if self._opened:
                self._opened = False
                quietly(self.uri, "close", self._close)
            self._finalizer()  # frees leftovers (normally none) and is then spent

    def stats(self) -> Mapping[str, int]:
        """Counters: delivered, timeouts, reconnects and the source's own (`stat_keys`).

        Returns:
            A copy of the counters.
        """
        return dict(self._counts)

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
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
        """Add `n` to counter `key` in stats()."""
        self._counts[key] += n

    def reject(self, reason: str, detail: str, timestamp_ns: int | None = None, **meta: Any) -> None:
        """Account for an input that cannot be used.

        It is counted under `reason` in stats() and, while events() is being iterated,
        queued as a numbered `Rejected`.

        Args:
            reason: the stat key (mapped to a record reason by REJECT_REASONS).
            detail: one human-readable line.
            timestamp_ns: when it arrived (monotonic ns); now when None.
            **meta: extra fields for the record's meta (path, device_frame_id, ...).
        """
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
        """Number and count one delivered image.

        Args:
            image: HxW or HxWxC pixels, owned by the frame from now on.
            pixel_format: GenICam name, e.g. RGB8, BayerRG8.
            timestamp_ns: capture time (monotonic ns); now when None.
            **meta: extra frame meta (device_frame_id, path, ...).

        Returns:
            The Frame with the next frame id.
        """
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
    """Holds a loop to `fps` on the monotonic clock (no drift: slots are absolute).

    Args:
        fps: frames per second; None or 0 for no pacing.
        sleep: the sleep function (tests pass a fake).
    """

    def __init__(self, fps: float | None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        """Sleep until the next slot (never bursts to catch up after falling behind)."""
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


def retry_with_backoff(
    uri: str, options: SourceOptions, attempt_open: Callable[[], None], is_closed: Callable[[], bool]
) -> None:
    """Call `attempt_open` until it succeeds, waiting options.backoff(i) before try i.

    Args:
        uri: the source's URI, for messages.
        options: reconnect, reconnect_attempts and the backoff.
        attempt_open: one reconnect attempt; raises on failure.
        is_closed: True when the source was closed meanwhile (then return at once).

    Raises:
        SourceError: naming the URI when every attempt failed or reconnecting is off.
    """
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
            last = first_line(exc)
            log.warning("%s: reconnect attempt %d failed: %s", uri, attempt + 1, last)
    raise SourceError(f"{uri}: device lost; {options.reconnect_attempts} reconnect attempts failed (last: {last})")
