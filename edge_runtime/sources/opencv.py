"""cv://0, cv://rtsp://..., cv://file.mp4 (or a bare video path) and gst://PIPELINE via OpenCV.

Frames come out as OpenCV delivers them (BGR8); preprocessing converts once. A video file
ends at its last frame (or starts again with loop); a live camera or stream that stops
delivering is counted ('read_failures') and re-opened with backoff when reconnect is on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_runtime.errors import SourceError
from edge_runtime.frames import Frame
from edge_runtime.sources.base import EndOfStream, Held, Pacer, SourceBase, quietly, retry_with_backoff
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.uri import SourceUri

log = logging.getLogger(__name__)

# Consecutive failed reads of a live source before it is treated as lost.
_FAILED_READS_LOST = 5


class OpenCVSource(SourceBase):
    """A camera index, network stream, video file or GStreamer pipeline through cv2.VideoCapture.

    Args:
        parsed: a `cv://` or `gst://` URI (or a bare video path parsed as `cv`).
        options: fps (files only), loop, timeout_ms (streams) and reconnect are applied.

    Raises:
        SourceError: `cv://` with nothing after it.
    """

    stat_keys = ("read_failures",)
    applies = frozenset({"fps", "loop", "timeout_ms", "reconnect", "reconnect_attempts", "reconnect_backoff_s"})
    _cap = Held()  # released by release_held if the source is dropped without close()

    @staticmethod
    def release_held(uri: str, held: dict[str, Any]) -> None:
        """Finalizer: release the VideoCapture (camera, stream socket or pipeline).

        Args:
            uri: the source's URI, for messages.
            held: `_cap` as the source left it.
        """
        cap = held.pop("_cap", None)
        if cap is not None:
            quietly(uri, "VideoCapture.release", cap.release)

    def __init__(self, parsed: SourceUri, options: SourceOptions) -> None:
        super().__init__(parsed.raw, options)
        self.kind, self.target = _classify(parsed)
        self.camera_serial = f"cv:{self.target}" if self.kind != "gst" else "gst"
        # A file is paced to fps when asked; live sources are paced by the camera itself.
        self._pacer = Pacer(options.fps if self.kind == "file" else None)
        self._cap: Any = None
        self._failed = 0

    def _open(self) -> None:
        if self.kind == "file" and not Path(self.target).is_file():
            raise SourceError(f"video file not found: {self.target}")
        self._cap = self._make_capture()

    def _make_capture(self) -> Any:
        import cv2

        t = int(self.options.timeout_ms)
        if self.kind == "index":
            cap = cv2.VideoCapture(int(self.target))
        elif self.kind == "gst":
            cap = cv2.VideoCapture(self.target, cv2.CAP_GSTREAMER)
        elif self.kind == "stream":
            # Bounded open/read on network streams; without them a dead camera blocks ~30 s.
            cap = cv2.VideoCapture(
                self.target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, t, cv2.CAP_PROP_READ_TIMEOUT_MSEC, t]
            )
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            hint = " (is this OpenCV built with GStreamer?)" if self.kind == "gst" else ""
            raise SourceError(f"OpenCV cannot open {self.uri}{hint}")
        backend = cap.getBackendName() if hasattr(cap, "getBackendName") else "?"
        log.info("%s opened with OpenCV backend %s", self.uri, backend)
        return cap

    def _grab(self) -> Frame | None:
        import cv2

        try:
            ok, image = self._cap.read()
        except cv2.error as exc:  # a decoder error spoils this read, not the run
            log.warning("%s: read failed: %s", self.uri, str(exc).strip().splitlines()[-1] if str(exc).strip() else exc)
            ok, image = False, None
            if self.kind == "file":
                self.count("read_failures")
                self._failed += 1
                if self._failed >= _FAILED_READS_LOST:
                    raise EndOfStream from None
                return None
        if ok and image is not None and image.size:
            self._failed = 0
            self._pacer.wait()
            pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
            fmt = "Mono8" if image.ndim == 2 else "BGR8"
            return self.make_frame(image, fmt, pos_ms=pos_ms)
        if self.kind == "file":
            if self.options.loop and self._next_id > 0:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                return None
            raise EndOfStream
        self.count("read_failures")
        self._failed += 1
        if self._failed >= _FAILED_READS_LOST:
            self._reopen()
        return None

    def _reopen(self) -> None:
        self.count("reconnects")
        if self._cap is not None:
            self._cap.release()
            self._cap = None

        def attempt() -> None:
            self._cap = self._make_capture()

        retry_with_backoff(self.uri, self.options, attempt, lambda: self._closed)
        self._failed = 0

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _classify(parsed: SourceUri) -> tuple[str, str]:
    target = parsed.target
    if parsed.scheme == "gst":
        return "gst", target
    if not target:
        raise SourceError(f"cv:// needs a camera index, stream URL or video file, got {parsed.raw!r}")
    if target.isdigit():
        return "index", target
    if "://" in target:
        return "stream", target
    return "file", target
