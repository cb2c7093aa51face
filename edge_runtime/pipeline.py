"""The pipelined capture loop: capture -> bounded queue -> inference -> bounded queue -> publish.

Three threads so capture, inference and publishing overlap:

* capture: pulls frames from the FrameSource into the inference queue. With drop policy
  `newest` a full queue drops its OLDEST frame (the line wants the latest part judged); with
  `block` capture waits for room before it takes the next frame. `auto` (the default) is
  `block` when the source is hardware-triggered (every trigger is a part that must be judged)
  and `newest` otherwise. `inference_queue: 0` is a hand-off: a frame is taken only when
  inference is idle, so no frame ages in a queue (the bench uses this to measure latency
  against model-only numbers).
* inference: backend.infer + postprocess (verdict, heatmap). Preprocessing runs in the
  capture thread by default, so it overlaps the previous frame's inference
  (`preprocess_in: inference` moves it here).
* publish: hands verdicts to the Publisher. Publishers queue internally, so this rarely
  waits; if the publish queue still fills, inference blocks (counted) — a verdict is never
  dropped. Capture is never blocked by publishing under `newest`.

Every frame is accounted for: one record per frame id on the verdict stream. A frame that is
not judged — dropped by the `newest` policy, rejected by the source (undecodable file,
incomplete camera buffer), refused by preprocessing (FrameRejected, wrong dtype/shape) or
scored NaN/out of range — becomes a SKIPPED/ERROR record with a reason (edge_runtime/verdict.py)
and the run goes on. Such a record travels the same queues as verdicts, so records come out
in capture order; it is a small dict (the image is released at once) and is queued as a
*marker* that never waits for room and never counts against the queue size, so capture is
never stalled by it. A dropped frame's marker takes the evicted frame's place in the queue.

Every frame carries monotonic timestamps per stage; stage latencies go to a LatencyRecorder
(bounded memory). Process health (RSS, open fds, threads) is sampled at every stats interval
and, with the record counts and the source's camera counters, published as the station status
(`Publisher.publish_status`, retained on MQTT) at start, at every interval and at the end.
`stop()` is safe from a signal handler: capture stops, queued frames are still inferred and
published, and the publisher is flushed before `run()` returns.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_runtime.errors import ConfigError, DataError, FrameRejected
from edge_runtime.frames import Frame, Rejected
from edge_runtime.preprocess import Roi, normalize, prepare
from edge_runtime.procstats import ProcessMonitor
from edge_runtime.sources.trigger_counters import missed_trigger_alarm
from edge_runtime.stats import (
    DEFAULT_WINDOW,
    IntervalMeter,
    LatencyRecorder,
    RecordStages,
)
from edge_runtime.verdict import KINDS, make_record

if TYPE_CHECKING:  # the seams, by their Protocols (no import cost at run time)
    from edge_runtime.backends.base import Backend
    from edge_runtime.frames import FrameSource
    from edge_runtime.publish.base import Publisher

# (frame, score, anomaly map, stage latencies in ms) -> the verdict record.
Postprocess = Callable[[Frame, float, np.ndarray, Mapping[str, float]], dict[str, Any]]

log = logging.getLogger(__name__)

STAGES = ("capture_wait", "queue", "preprocess", "inference", "postprocess", "publish", "total")
_MS = 1e-6


@dataclass(frozen=True)
class PipelineOptions:
    """The `pipeline:` section of the runtime config (frozen, validated; each field's comment
    says what it sets).

    Raises:
        ConfigError: a value out of range, or a hand-off queue with the `newest` policy.
    """

    inference_queue: int = 2  # frames waiting for inference; 0 = hand-off (capture on demand)
    # auto: `block` for a hardware-triggered source or a hand-off queue, else `newest`.
    drop_policy: Literal["auto", "newest", "block"] = "auto"
    # Where preprocessing runs: in the capture thread it overlaps the previous frame's
    # inference (the other core); in the inference thread no work is spent on frames that
    # the `newest` policy then drops.
    preprocess_in: Literal["capture", "inference"] = "capture"
    publish_queue: int = 256  # verdicts waiting for the publisher; full -> inference waits
    stats_interval_s: float = 10.0  # periodic stats log line + status publication; 0 = off
    flush_timeout_s: float = 10.0
    stats_window: int = DEFAULT_WINDOW  # latency reservoir per stage (bounded; see stats.py)
    stop_grace_s: float = 1.0  # after stop, a capture still blocked in the source gets it closed
    process_warmup_s: float = 30.0  # RSS growth is measured from the first sample after this
    # SKIPPED/ERROR records waiting in the inference queue (only grows while inference is
    # stuck); beyond this they are counted as `records_lost_overflow` instead of queued.
    max_pending_records: int = 10_000

    def __post_init__(self) -> None:
        if self.inference_queue < 0:
            raise ConfigError(f"pipeline.inference_queue must be >= 0, got {self.inference_queue}")
        if self.inference_queue == 0 and self.drop_policy == "newest":
            raise ConfigError(
                "pipeline.inference_queue 0 (hand-off) needs drop_policy 'block'; 'newest' needs a queue of at least 1"
            )
        if self.publish_queue < 1:
            raise ConfigError(f"pipeline.publish_queue must be >= 1, got {self.publish_queue}")
        if self.stats_interval_s < 0 or self.flush_timeout_s < 0:
            raise ConfigError("pipeline.stats_interval_s and flush_timeout_s must be >= 0")
        if self.stats_window < 1:
            raise ConfigError("pipeline.stats_window must be >= 1")
        if self.process_warmup_s < 0:
            raise ConfigError("pipeline.process_warmup_s must be >= 0")
        if self.max_pending_records < 1:
            raise ConfigError("pipeline.max_pending_records must be >= 1")

    def resolved_policy(self, trigger: str = "off") -> str:
        """The drop policy in force for a source with this trigger mode.

        Args:
            trigger: the source's trigger option (off, software, hardware).

        Returns:
            "newest" or "block" (`auto` resolved: block for hardware triggers and hand-off).
        """
        if self.drop_policy != "auto":
            return self.drop_policy
        return "block" if trigger == "hardware" or self.inference_queue == 0 else "newest"


class _Closed:
    pass


CLOSED = _Closed()


class BoundedQueue:
    """A queue with an explicit full-queue policy, hand-off mode and markers.

    `newest`: put never waits; when full the oldest item is evicted and returned to the caller
    (who counts it). `block`: `wait_ready` waits until a put would not wait, so the producer
    takes its next item only when there is room (maxsize 0: when a consumer is waiting).
    A *marker* (`put(x, marker=True)`) is delivered in order like any item but never waits,
    is never evicted and does not count against `maxsize`; `replace_evicted` turns an evicted
    item into a marker left in its place.

    Args:
        maxsize: items (not markers) it holds; 0 = hand-off to a waiting consumer.
        policy: "newest" or "block".

    Raises:
        ConfigError: an unknown policy.
    """

    def __init__(self, maxsize: int, policy: str = "block") -> None:
        if policy not in ("newest", "block"):
            raise ConfigError(f"unknown drop policy {policy!r} (newest|block)")
        self.maxsize = maxsize
        self.policy = policy
        self._items: deque[tuple[bool, Any]] = deque()  # (is_marker, item)
        self._real = 0
        self._cond = threading.Condition()
        self._closed = False
        self._aborted = False
        self._waiting_consumers = 0
        self.high_water = 0

    @property
    def markers(self) -> int:
        """Markers waiting (they do not count against maxsize)."""
        return len(self._items) - self._real

    def _has_room(self) -> bool:
        if self.maxsize == 0:
            return self._real == 0 and self._waiting_consumers > 0
        return self._real < self.maxsize

    def wait_ready(self, stop: threading.Event | None = None, poll_s: float = 0.05) -> bool:
        """Block-policy producers call this before acquiring an item.

        Args:
            stop: give up when this is set.
            poll_s: how often `stop` is checked.

        Returns:
            True when a put would not wait; False when aborted or stopped.
        """
        if self.policy == "newest":
            return not self._aborted
        with self._cond:
            while not self._has_room():
                if self._aborted or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(poll_s)
            return not self._aborted

    def put(
        self, item: Any, *, marker: bool = False, replace_evicted: Callable[[Any], Any] | None = None
    ) -> Any | None:
        """Add `item` at the end; waits for room under `block`.

        Args:
            item: what to queue.
            marker: queue it as a marker (never waits, never evicted, not counted).
            replace_evicted: under `newest`, called with the evicted item; what it returns
                (if not None) is left in its place as a marker.

        Returns:
            The evicted item under `newest` when the queue was full, else None.
        """
        with self._cond:
            if self._aborted:
                return None
            evicted = None
            if marker:
                self._items.append((True, item))
                self._cond.notify_all()
                return None
            if self.policy == "newest":
                if self._real >= max(self.maxsize, 1):
                    evicted = self._evict_oldest(replace_evicted)
            else:
                # Room was normally reserved by wait_ready; a hand-off queue may briefly hold one.
                while self._real >= max(self.maxsize, 1) and not self._aborted:
                    self._cond.wait(0.05)
            if self._aborted:
                return None
            self._items.append((False, item))
            self._real += 1
            self.high_water = max(self.high_water, self._real)
            self._cond.notify_all()
            return evicted

    def _evict_oldest(self, replace: Callable[[Any], Any] | None) -> Any:
        for i, (is_marker, old) in enumerate(self._items):
            if not is_marker:
                substitute = replace(old) if replace is not None else None
                if substitute is None:
                    del self._items[i]
                else:
                    self._items[i] = (True, substitute)
                self._real -= 1
                return old
        return None

    def get(self) -> Any:
        """Take the next item, waiting for one.

        Returns:
            The item (or marker), or CLOSED once the producer closed the queue and it is
            empty, or it was aborted.
        """
        with self._cond:
            self._waiting_consumers += 1
            self._cond.notify_all()
            try:
                while not self._items:
                    if self._closed or self._aborted:
                        return CLOSED
                    self._cond.wait(0.1)
                if self._aborted:
                    return CLOSED
                is_marker, item = self._items.popleft()
                if not is_marker:
                    self._real -= 1
                self._cond.notify_all()
                return item
            finally:
                self._waiting_consumers -= 1

    def close(self) -> None:
        """No more items will come: `get` returns CLOSED once the queue is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> int:
        """Wake everybody and discard what is queued.

        Returns:
            How many items (markers included) were discarded.
        """
        with self._cond:
            self._aborted = True
            n = len(self._items)
            self._items.clear()
            self._real = 0
            self._cond.notify_all()
            return n

    def __len__(self) -> int:
        with self._cond:
            return self._real


@dataclass
class _Work:
    frame: Frame | None  # None for a SKIPPED/ERROR record made before inference
    t_wait_ns: int  # capture thread started waiting for this frame
    t_captured_ns: int  # frame in hand
    x: np.ndarray | None = None  # model input, when preprocessed in the capture thread
    t_ready_ns: int = 0  # when the frame (or its model input) entered the queue
    stages_ms: dict[str, float] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    t_post_ns: int = 0


@dataclass(frozen=True)
class PipelineResult:
    """What `Pipeline.run` returns: counts, per-stage latencies and process health."""

    captured: int
    inferred: int
    published: int  # records of frames that went through inference (OK, NG, or ERROR by score)
    dropped: int
    ok: int
    ng: int
    wall_s: float
    fps: float
    stop_reason: str
    flushed: bool
    stats: Mapping[str, Any]
    counters: Mapping[str, int]
    skipped: int = 0
    errors: int = 0
    source_rejected: int = 0  # inputs the source could not turn into frames (they have records)
    records: Mapping[str, Any] = field(default_factory=dict)  # every record: by verdict and by reason
    process: Mapping[str, Any] = field(default_factory=dict)  # RSS/fds/threads: start, warm, end, peak

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (the run summary written by `run --summary-json`)."""
        return {
            "captured": self.captured,
            "inferred": self.inferred,
            "published": self.published,
            "dropped": self.dropped,
            "ok": self.ok,
            "ng": self.ng,
            "skipped": self.skipped,
            "errors": self.errors,
            "source_rejected": self.source_rejected,
            "wall_s": round(self.wall_s, 3),
            "fps": round(self.fps, 3),
            "stop_reason": self.stop_reason,
            "flushed": self.flushed,
            "records": dict(self.records),
            "counters": dict(self.counters),
            "stats": dict(self.stats),
            "process": dict(self.process),
        }


def make_preprocessor(bundle: Any, roi: Roi | None = None) -> Callable[[Frame], np.ndarray]:
    """The function that turns a frame into one model input, as the bundle asks.

    Args:
        bundle: the loaded bundle (its manifest's preprocess section).
        roi: a software crop before resizing (model-size bundles only).

    Returns:
        Frame -> HxWx3 uint8, CxHxW float32 for NCHW_float32 bundles, or the frame itself
        (checked) for raw-frame bundles.

    Raises:
        ConfigError: an ROI with a raw-frame bundle.
    """
    spec = bundle.manifest.preprocess
    if spec.input_layout == "frame_uint8":
        if roi is not None:
            raise ConfigError(
                "preprocess.roi is a software crop for model-size bundles; a raw-frame bundle crops in its graph (its ROI is fixed at export: --roi)"
            )
        return frame_checker(spec)
    size = tuple(spec.image_size)
    nchw = spec.input_layout == "NCHW_float32"

    def preprocess(frame: Frame) -> np.ndarray:
        fmt = str(frame.meta.get("pixel_format", "RGB8")) if frame.meta else "RGB8"
        img = prepare(frame.image, size, pixel_format=fmt, color_order=spec.color_order, roi=roi, method=spec.resize)
        if nchw:
            return normalize(img[None], spec.mean, spec.std)[0]
        return img

    return preprocess


def frame_checker(spec: Any) -> Callable[[Frame], np.ndarray]:
    """Raw-frame bundles: the frame goes to the backend as it came.

    No copy when the source's buffer is contiguous, which every source's is.

    Args:
        spec: the manifest's preprocess section (input_format, input_size).

    Returns:
        Frame -> the frame's image; raises FrameRejected (one line; the pipeline records it
        as SKIPPED) for a frame of another pixel format or size.
    """
    from edge_runtime.errors import FrameRejected
    from edge_runtime.rawframe import frame_shape, pixel_format

    want_fmt = pixel_format(spec.input_format)
    want_shape = frame_shape(spec.input_format, spec.input_size)

    def check(frame: Frame) -> np.ndarray:
        img = frame.image
        fmt = str(frame.meta.get("pixel_format", "")) if frame.meta else ""
        if fmt != want_fmt:
            raise FrameRejected(
                "frame_format_mismatch",
                f"frame {frame.frame_id} is {fmt or 'of unknown pixel format'}, the bundle takes {want_fmt} frames",
            )
        if img.shape != want_shape or img.dtype != np.uint8:
            raise FrameRejected(
                "frame_size_mismatch",
                f"frame {frame.frame_id} is {img.dtype} {'x'.join(map(str, img.shape))}, the bundle takes uint8 {'x'.join(map(str, want_shape))} ({want_fmt} {want_shape[1]}x{want_shape[0]})",
            )
        return np.ascontiguousarray(img)

    return check


def classify_failure(exc: BaseException) -> tuple[str, str]:
    """Name what went wrong while preparing one frame.

    Args:
        exc: the exception preprocessing raised.

    Returns:
        (reason code for the record, one-line detail).
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, FrameRejected):
        return exc.reason, text
    if isinstance(exc, DataError):
        return "bad_frame", text
    return "preprocess_failed", f"{type(exc).__name__}: {text}"


def _check_limits(max_frames: int | None, duration_s: float | None) -> None:
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    if duration_s is not None and duration_s <= 0:
        raise ConfigError(f"duration must be > 0 s, got {duration_s}")


def _trigger_mode(source: FrameSource) -> str:
    """The source's trigger option ("off" for sources without one): it picks the drop policy."""
    return str(getattr(getattr(source, "options", None), "trigger", "off"))


def _identity(postprocessor: Postprocess) -> dict[str, str]:
    """The bundle and backend fields every record carries, from the postprocessor."""
    return {key: str(getattr(postprocessor, key, "")) for key in ("bundle_sha256", "model_id", "backend", "precision")}


class Pipeline:
    """Runs one source through one backend into one publisher until the source ends, a limit
    is reached or `stop()` is called. The caller opens/closes source, backend and publisher."""

    _missed_at_status: int | None = None  # camera missed triggers at the last status (alarm on growth)

    def __init__(
        self,
        source: FrameSource,
        backend: Backend,
        postprocessor: Postprocess,
        publisher: Publisher,
        preprocess: Callable[[Frame], np.ndarray],
        options: PipelineOptions = PipelineOptions(),
        *,
        max_frames: int | None = None,
        duration_s: float | None = None,
        recorder: LatencyRecorder | None = None,
        on_frame: Callable[[int], None] | None = None,
        station: str | None = None,
    ) -> None:
        """Wire the stages; nothing runs until `run()`.

        Args:
            source: the frames (opened by the caller); its `events()` are used when it has them.
            backend: a loaded backend; `infer` gets a batch of one model input.
            postprocessor: (frame, score, anomaly map, stage ms) -> verdict record; its
                bundle_sha256, model_id, backend, precision and threshold attributes, when
                present, are named in every SKIPPED/ERROR record too.
            publisher: where records and the station status go (opened by the caller).
            preprocess: frame -> model input (see `make_preprocessor`).
            options: queues, drop policy, stats interval, flush timeout.
            max_frames: stop capturing after this many frames.
            duration_s: stop capturing after this many seconds.
            recorder: collects per-stage latencies; a new one when None.
            on_frame: called with the published count after each published record.
            station: the station name in the status; the host name when None.

        Raises:
            ConfigError: max_frames < 1 or duration_s <= 0.
        """
        _check_limits(max_frames, duration_s)
        self.source = source
        self.backend = backend
        self.postprocessor = postprocessor
        self.publisher = publisher
        self.preprocess = preprocess
        self.options = options
        self.max_frames = max_frames
        self.duration_s = duration_s
        self.recorder = recorder or LatencyRecorder(options.stats_window)
        self.on_frame = on_frame
        self.station = station or socket.gethostname()
        self.drop_policy = options.resolved_policy(_trigger_mode(source))
        # What every record names: the bundle and backend that (would have) judged it.
        self.identity = _identity(postprocessor)
        self.threshold = float(getattr(postprocessor, "threshold", 0.0))  # records need a finite value
        self._init_control()
        self._init_counters()

    def _init_control(self) -> None:
        """Stop flag, first error, the two queues and the lock guarding the counters."""
        self._stop = threading.Event()
        self._stop_reason = ""
        self._stop_t = 0.0
        self._errors: list[BaseException] = []
        self._failed_stage = ""
        self._q_in = BoundedQueue(self.options.inference_queue, self.drop_policy)
        self._q_out = BoundedQueue(self.options.publish_queue, "block")
        self._lock = threading.Lock()

    def _init_counters(self) -> None:
        """Per-stage counts, records by verdict and reason, process health."""
        self.captured = 0
        self.inferred = 0
        self.published = 0
        self.dropped = 0
        self.source_rejected = 0
        self.kinds: Counter[str] = Counter({k: 0 for k in KINDS})
        self.reasons: Counter[str] = Counter()
        self._side_records = 0  # records that bypass inference (drops, rejects, preprocessing)
        self.monitor: ProcessMonitor | None = None
        self.last_fps = 0.0

    # -- control -------------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Stop capturing; what is already captured is still inferred and published.
        Only sets flags, so it is safe to call from a signal handler."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop_t = time.monotonic()
            self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called (or a limit or an error stopped capture)."""
        return self._stop.is_set()

    def progress(self) -> dict[str, Any]:
        """Per-stage counters; a watchdog (edge_runtime/sdnotify.py) compares them over time
        to tell a live pipeline from a stuck capture, inference or publish thread."""
        with self._lock:
            return {
                "captured": self.captured,
                "dropped": self.dropped,
                "inferred": self.inferred,
                "published": self.published,
                "stopping": self._stop.is_set(),
            }

    def _fail(self, exc: BaseException, stage: str) -> None:
        """Stop after an error, keeping every verdict that can still be delivered: after a
        capture error the queued frames are still judged; after an inference error the
        verdicts already made are still published; only a broken publisher discards them."""
        with self._lock:
            self._errors.append(exc)
            self._failed_stage = self._failed_stage or stage
        self.stop(f"error in {stage}: {exc}")
        lost = 0
        if stage in ("inference", "publish"):
            lost += self._q_in.abort()
        if stage == "publish":
            lost += self._q_out.abort()
        if lost:
            self.recorder.count("lost_on_error", lost)

    # -- records -------------------------------------------------------------------------
    def _record(
        self,
        frame_id: int,
        camera_serial: str,
        ts_ns: int,
        reason: str,
        detail: str,
        stages: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        return make_record(
            frame_id=frame_id,
            camera_serial=camera_serial,
            capture_ts_ns=ts_ns,
            reason=reason,
            detail=detail,
            threshold=self.threshold,
            latency_ms=stages,
            **self.identity,
        )

    def _count(self, record: Mapping[str, Any]) -> None:
        """Every record is counted once, by verdict and (for SKIPPED/ERROR) by reason."""
        kind = str(record.get("verdict"))
        reason = record.get("reason")
        with self._lock:
            self.kinds[kind] += 1
            if reason:
                self.reasons[reason] += 1
                n = self.reasons[reason]
        if reason and n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th...: visible, never a flood
            log.warning(
                "frame %s: %s %s (%s); %d so far", record.get("frame_id"), kind, reason, record.get("detail"), n
            )

    def _marker(self, record: dict[str, Any], t_captured_ns: int, stages: Mapping[str, float] | None = None) -> _Work:
        now = time.monotonic_ns()
        return _Work(
            None, t_captured_ns, t_captured_ns, stages_ms=RecordStages(stages or {}), verdict=record, t_post_ns=now
        )

    def _queue_record(self, work: _Work) -> None:
        """A SKIPPED/ERROR record made in the capture thread: counted and put into the
        inference queue as a marker, in order; it never waits, so capture is not stalled. One
        that cannot be queued is counted only as lost (as an evicted frame without room is)."""
        if self._q_in.markers >= self.options.max_pending_records:
            self.recorder.count("records_lost_overflow")
            log.error(
                "frame %s: %d records already wait behind a stuck inference; this one is only counted",
                work.verdict and work.verdict["frame_id"],
                self._q_in.markers,
            )
            return
        assert work.verdict is not None
        self._count(work.verdict)
        with self._lock:
            self._side_records += 1
        self._q_in.put(work, marker=True)

    def _replace_dropped(self, work: _Work) -> _Work | None:
        """Called under the queue's lock for the frame the `newest` policy evicts: its
        SKIPPED record takes its place (the image is released with the evicted work)."""
        if self._q_in.markers >= self.options.max_pending_records or work.frame is None:
            return None
        f = work.frame
        detail = f"inference queue full ({self._q_in.maxsize}); a newer frame took this one's place"
        marker = self._marker(
            self._record(f.frame_id, f.camera_serial, f.timestamp_ns, "dropped_newest", detail), work.t_captured_ns
        )
        work.verdict = marker.verdict  # tells _count_dropped that the record was queued
        return marker

    def _preprocess(self, work: _Work, stages: dict[str, float]) -> bool:
        """Fill work.x; on failure turn `work` into its ERROR record and return False."""
        assert work.frame is not None
        t0 = time.monotonic_ns()
        try:
            work.x = self.preprocess(work.frame)
        except Exception as exc:  # no input may stop the line: every failure is a record
            reason, detail = classify_failure(exc)
            if reason == "preprocess_failed":
                log.debug("preprocessing frame %d failed", work.frame.frame_id, exc_info=True)
            stages["preprocess"] = (time.monotonic_ns() - t0) * _MS
            f = work.frame
            work.verdict = self._record(f.frame_id, f.camera_serial, f.timestamp_ns, reason, detail, stages)
            work.stages_ms = RecordStages(stages)
            work.frame = None
            work.t_post_ns = time.monotonic_ns()
            return False
        stages["preprocess"] = (time.monotonic_ns() - t0) * _MS
        return True

    # -- threads -------------------------------------------------------------------------
    def _source_items(self) -> Any:
        """The source's events() (frames and numbered rejects) when it has them, else frames()."""
        events = getattr(self.source, "events", None)
        return events() if callable(events) else self.source.frames()

    def _capture(self) -> None:
        it = None
        try:
            it = iter(self._source_items())
            while not self._stop.is_set():
                if not self._q_in.wait_ready(self._stop):
                    break
                t_wait = time.monotonic_ns()
                item = next(it, None)
                t_cap = time.monotonic_ns()
                if item is None:
                    self.stop("source ended")
                    break
                if isinstance(item, Rejected):
                    with self._lock:
                        self.source_rejected += 1
                    record = self._record(
                        item.frame_id, item.camera_serial, item.timestamp_ns, item.reason, item.detail
                    )
                    self._queue_record(self._marker(record, t_cap))
                    continue
                n = self._take(item, t_wait, t_cap)
                if self.max_frames is not None and n >= self.max_frames:
                    self.stop(f"max frames ({self.max_frames}) reached")
        except BaseException as exc:  # re-raised by run()
            self._fail(exc, "capture")
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # a generator's cleanup failing must not hide the run's result
                    log.warning("closing the frame iterator failed: %s", exc)
            self._q_in.close()

    def _take(self, frame: Frame, t_wait: int, t_cap: int) -> int:
        """Queue one captured frame (preprocessed here by default); returns the capture count."""
        work = _Work(frame, t_wait, t_cap)
        with self._lock:
            self.captured += 1
            n = self.captured
        if self.options.preprocess_in == "capture" and not self._preprocess(work, work.stages_ms):
            assert work.verdict is not None
            self._queue_record(work)
            return n
        work.t_ready_ns = time.monotonic_ns()
        evicted = self._q_in.put(work, replace_evicted=self._replace_dropped)
        if evicted is not None:
            with self._lock:
                self.dropped += 1
            self.recorder.count("drops_inference_queue")
            self._count_dropped(evicted)
        return n

    def _count_dropped(self, evicted: _Work) -> None:
        """Count the SKIPPED record that `_replace_dropped` left in the evicted frame's place."""
        if evicted.verdict is None:
            self.recorder.count("records_lost_overflow")
            return
        with self._lock:
            self._side_records += 1
        self._count(evicted.verdict)

    def _infer(self) -> None:
        try:
            while True:
                work = self._q_in.get()
                if work is CLOSED:
                    break
                if work.verdict is None:
                    self._judge(work)
                if len(self._q_out) >= self._q_out.maxsize:
                    self.recorder.count("publish_backpressure")
                if not self._q_out.wait_ready():
                    break  # aborted by an error elsewhere
                self._q_out.put(work)
        except BaseException as exc:  # re-raised by run()
            self._fail(exc, "inference")
        finally:
            self._q_out.close()

    def _judge(self, work: _Work) -> None:
        """Preprocess (if not done), infer and postprocess one frame: work.verdict is set."""
        t0 = time.monotonic_ns()
        stages = work.stages_ms
        if work.x is None and not self._preprocess(work, stages):
            assert work.verdict is not None
            self._count(work.verdict)
            with self._lock:
                self._side_records += 1
            return
        frame = work.frame
        assert frame is not None and work.x is not None
        t1 = time.monotonic_ns()
        out = self.backend.infer(work.x[None])  # a failing backend stops the run (device lost)
        t2 = time.monotonic_ns()
        work.x = None  # the input is not needed any more; do not hold it in the publish queue
        stages["capture_wait"] = (work.t_captured_ns - work.t_wait_ns) * _MS
        stages["queue"] = (t0 - work.t_ready_ns) * _MS
        stages["inference"] = (t2 - t1) * _MS
        try:
            verdict = self.postprocessor(frame, float(out.score[0]), out.anomaly_map[0], dict(stages))
        except Exception as exc:  # one frame's verdict failing must not stop the line
            verdict = self._record(
                frame.frame_id,
                frame.camera_serial,
                frame.timestamp_ns,
                "postprocess_failed",
                f"{type(exc).__name__}: {exc}",
                stages,
            )
            log.debug("postprocessing frame %d failed", frame.frame_id, exc_info=True)
        t3 = time.monotonic_ns()
        stages["postprocess"] = (t3 - t2) * _MS
        verdict.setdefault("latency_ms", {})["postprocess"] = round(stages["postprocess"], 3)
        work.verdict = verdict
        work.t_post_ns = t3
        with self._lock:
            self.inferred += 1
        self._count(verdict)

    def _publish(self) -> None:
        """Hands verdicts to the publisher in batches: whatever is queued when the publisher
        is ready goes in one publish_many call, so a durable publisher commits (fsyncs) once
        per batch (group commit) and keeps up however slow one fsync is. A verdict counts as
        published only after that call returned, i.e. once the publisher holds it (stored on
        disk with a spool_dir)."""
        from edge_runtime.publish.base import publish_many

        try:
            closed = False
            while not closed:
                work = self._q_out.get()
                if work is CLOSED:
                    break
                batch = [work]
                # Only this thread takes from the queue, so what len() reports is there to take.
                for _ in range(len(self._q_out)):
                    more = self._q_out.get()
                    if more is CLOSED:
                        closed = True
                        break
                    batch.append(more)
                publish_many(self.publisher, [w.verdict for w in batch])
                t4 = time.monotonic_ns()
                for w in batch:
                    w.stages_ms["publish"] = (t4 - w.t_post_ns) * _MS
                    w.stages_ms["total"] = (t4 - w.t_captured_ns) * _MS
                    self.recorder.record(w.stages_ms)
                with self._lock:
                    self.published += len(batch)
                    n = self.published
                if self.on_frame is not None:
                    for k in range(n - len(batch) + 1, n + 1):
                        self.on_frame(k)
        except BaseException as exc:  # re-raised by run()
            self._fail(exc, "publish")

    # -- status --------------------------------------------------------------------------
    def status_fields(self, camera: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The station status (edge_runtime/status.py fields) as of now.

        Args:
            camera: the source's stats when the caller has just read them (a camera reads
                counter registers for them: once per stats tick, not twice).
        """
        with self._lock:
            counts = {k: self.kinds[k] for k in KINDS}
            reasons = dict(self.reasons)
            judged = self.kinds["OK"] + self.kinds["NG"]
        camera = self._camera_stats() if camera is None else dict(camera)
        fields: dict[str, Any] = {
            "station": self.station,
            **self.identity,
            "threshold": self.threshold,
            "drop_policy": self.drop_policy,
            "fps": round(self.last_fps, 2),
            "frames": judged,
            "counts": counts,
            "reasons": reasons,
            "camera": camera,
        }
        alarms, self._missed_at_status = missed_trigger_alarm(camera, self._missed_at_status)
        if alarms:
            fields["alarms"] = alarms
        if self.monitor is not None:
            latest = self.monitor.latest
            fields["process"] = {k: latest[k] for k in ("rss_mb", "fds", "threads")}
        station = getattr(self.postprocessor, "monitor", None)  # input alarm + rolling OK score
        if station is not None:
            extra = dict(station.status_fields())
            fields["alarms"] = list(fields.get("alarms", [])) + list(extra.pop("alarms", []))
            fields.update(extra)
        return fields

    def _send_status(self, camera: Mapping[str, Any] | None = None) -> None:
        send = getattr(self.publisher, "publish_status", None)
        if send is None:
            return
        try:
            send(self.status_fields(camera))
        except Exception as exc:  # status is best effort; verdicts are what must not stop
            log.warning("cannot publish status: %s", exc)

    def _tick(self, meter: IntervalMeter) -> None:
        assert self.monitor is not None
        proc = self.monitor.sample()
        with self._lock:
            skipped, errors = self.kinds["SKIPPED"], self.kinds["ERROR"]
        camera = self._camera_stats()
        missed = camera.get("missed_triggers")
        line = meter.tick(
            ("inference", "total"),
            {
                "skipped": skipped,
                "errors": errors,
                **({} if missed is None else {"missed_triggers": missed}),
                "rss": f"{proc['rss_mb']}MB",
                "fds": proc["fds"],
                "threads": proc["threads"],
            },
        )
        self.last_fps = meter.last_fps
        log.info("stats: %s", line)
        self._send_status(camera)

    def _camera_stats(self) -> dict[str, Any]:
        """The source's counters; a failing read becomes an `error` field, never an exception."""
        try:
            return dict(self.source.stats())
        except Exception as exc:  # a source's counters must not stop the line
            return {"error": str(exc)}

    # -- main ----------------------------------------------------------------------------
    def run(self) -> PipelineResult:
        """Capture, infer and publish until the source ends, a limit is reached or `stop()`.

        Queued frames are still judged and published after a stop, and the publisher is
        flushed before this returns. The station status is sent at start, every
        stats_interval_s and at the end.

        Returns:
            The counts, latencies and process health of the run.

        Raises:
            The first exception any stage raised (e.g. SourceError, a backend's error),
            after what could still be delivered was delivered.
        """
        t_start = time.monotonic()
        self.monitor = ProcessMonitor(self.options.process_warmup_s)
        log.info("drop policy %s (inference queue %d)", self.drop_policy, self.options.inference_queue)
        self._send_status()
        threads = self._start_threads()
        try:
            self._supervise(threads, t_start)
        except KeyboardInterrupt:
            # The CLI installs its own handlers; a bare Ctrl-C from an embedding program still drains.
            self.stop("interrupted")
            for t in threads:
                t.join()
        flushed = self._flush()
        wall = time.monotonic() - t_start
        self.monitor.sample()
        self.last_fps = self.recorder.fps()
        self._send_status()
        if self._errors:
            raise self._errors[0]
        return self._result(wall, flushed)

    def _start_threads(self) -> list[threading.Thread]:
        """Capture, inference and publish threads, started (publish last in the list)."""
        threads = [
            threading.Thread(target=self._capture, name="clipinspect-capture", daemon=True),
            threading.Thread(target=self._infer, name="clipinspect-inference", daemon=True),
            threading.Thread(target=self._publish, name="clipinspect-publish", daemon=True),
        ]
        for t in threads:
            t.start()
        return threads

    def _supervise(self, threads: list[threading.Thread], t_start: float) -> None:
        """Until every thread ended: enforce the duration, close a source that ignores a stop,
        log stats and send the status every interval."""
        meter = IntervalMeter(self.recorder)
        interval = self.options.stats_interval_s
        next_stats = time.monotonic() + interval if interval > 0 else float("inf")
        deadline = t_start + self.duration_s if self.duration_s else float("inf")
        closed_source = False
        # Short waits keep this thread responsive to signals and limits.
        while any(t.is_alive() for t in threads):
            threads[-1].join(0.05)
            now = time.monotonic()
            if now >= deadline:
                self.stop(f"duration ({self.duration_s:g} s) reached")
            if (
                self._stop.is_set()
                and threads[0].is_alive()
                and not closed_source
                and now - self._stop_t >= self.options.stop_grace_s
            ):
                # A camera waiting for a frame that never comes: close() ends frames().
                closed_source = True
                log.info("capture still waiting %.1f s after stop; closing the source", self.options.stop_grace_s)
                self.source.close()
            if now >= next_stats:
                self._tick(meter)
                next_stats = now + interval

    def _flush(self) -> bool:
        """Wait for the publisher to confirm delivery (not after the publisher itself failed)."""
        if self._failed_stage == "publish":
            return True
        flushed = bool(self.publisher.flush(self.options.flush_timeout_s))
        if not flushed:
            log.warning(
                "publisher did not confirm delivery within %.1f s (what is left stays in its queue/spool)",
                self.options.flush_timeout_s,
            )
        return flushed

    def _result(self, wall: float, flushed: bool) -> PipelineResult:
        assert self.monitor is not None
        with self._lock:
            kinds = {k: self.kinds[k] for k in KINDS}
            records = {"total": sum(kinds.values()), **kinds, "by_reason": dict(sorted(self.reasons.items()))}
            side = self._side_records
        return PipelineResult(
            captured=self.captured,
            inferred=self.inferred,
            # On success every queued record was published; those that skipped inference
            # (drops, rejects, preprocessing failures) are reported apart.
            published=self.published - side,
            dropped=self.dropped,
            ok=kinds["OK"],
            ng=kinds["NG"],
            wall_s=wall,
            fps=self.recorder.fps(),
            stop_reason=self._stop_reason or "source ended",
            flushed=flushed,
            stats=self.recorder.snapshot(),
            counters=self.recorder.counters(),
            skipped=kinds["SKIPPED"],
            errors=kinds["ERROR"],
            source_rejected=self.source_rejected,
            records=records,
            process=self.monitor.summary(),
        )
