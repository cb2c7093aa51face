"""Frames and the FrameSource seam."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured image.

    Attributes:
        image: HxW (mono/Bayer) or HxWx3; `meta['pixel_format']` says which (e.g. 'RGB8',
            'BGR8', 'BayerRG8', 'Mono8'), so preprocessing can convert once.
        timestamp_ns: capture time, time.monotonic_ns() domain unless meta says otherwise.
        frame_id: consecutive per source, from 0 (rejected inputs take ids too).
        camera_serial: the camera (or replay) that delivered it.
        meta: pixel_format, source URI, device frame id/timestamp, path, ...
    """

    image: np.ndarray
    timestamp_ns: int  # capture time, time.monotonic_ns() domain unless meta says otherwise
    frame_id: int
    camera_serial: str
    meta: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class FrameSource(Protocol):
    """A camera or replay. `frames()` yields until the source ends or `close()` is called.

    Sources count what they drop (incomplete, corrupt, unreadable) in `stats()` rather than
    raising, so the capture loop keeps going; an unrecoverable failure raises SourceError.
    Sources built on SourceBase also offer `events()`: frames plus a numbered `Rejected` for
    each input they could not use, which the pipeline publishes as an ERROR record.
    """

    uri: str

    def open(self) -> None:
        """Connect to the device or file; a second call does nothing.

        Raises:
            SourceError: it cannot be opened (one line).
            MissingDependency: the SDK or package it needs is not installed.
        """

    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends or `close()` is called (from any thread).

        Raises:
            SourceError: the source failed for good.
        """

    def close(self) -> None:
        """Release the device; idempotent, never raises."""

    def stats(self) -> Mapping[str, int]:
        """Counters (delivered, timeouts, reconnects, and what the source dropped)."""


@dataclass(frozen=True)
class Rejected:
    """An input the source received but could not turn into a usable Frame (undecodable file,
    incomplete camera buffer, ...). It still takes a frame id, so the consumer can publish a
    SKIPPED/ERROR record for it instead of leaving a gap (see `SourceBase.events`)."""

    frame_id: int
    timestamp_ns: int
    camera_serial: str
    reason: str  # machine-readable code, see verdict.REASONS
    detail: str  # one human-readable line
    meta: Mapping[str, Any] = field(default_factory=dict)
