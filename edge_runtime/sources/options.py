"""Options shared by every frame source (camera settings, timeouts, pacing, reconnect).

A source applies the options it understands and warns about the ones it cannot apply,
so a setting the user asked for never silently disappears. `None` means "leave the camera
as it is" (its persisted user set), not "reset to a default".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edge_runtime.errors import ConfigError
from edge_runtime.imageio import MAX_PIXELS

Trigger = Literal["off", "software", "hardware"]
TriggerEdge = Literal["RisingEdge", "FallingEdge"]
BufferHandling = Literal["NewestOnly", "NewestFirst", "OldestFirst", "OldestFirstOverwrite"]

_LINE = re.compile(r"^Line\d+$")


@dataclass(frozen=True)
class SourceOptions:
    """Camera settings, timeouts, pacing and reconnect for any source (frozen, validated).

    Each field's comment says what it sets. A URI's query keys override these; a source
    warns about a field set away from its default that it cannot apply.

    Raises:
        ConfigError: a value out of range (one line naming the option).
    """

    exposure_us: float | None = None  # ExposureAuto=Off + ExposureTime
    gain_db: float | None = None  # GainAuto=Off + Gain
    pixel_format: str | None = None  # GenICam name, e.g. BayerRG8, Mono8, RGB8
    trigger: Trigger = "off"
    trigger_line: str = "Line0"  # hardware trigger input
    trigger_edge: TriggerEdge = "RisingEdge"
    # Count missed hardware triggers with the camera's Counter0/Counter1. Off for a station
    # whose counters already drive an output line (strobe): the count is then null, "disabled".
    trigger_counters: bool = True
    buffer_count: int = 3  # host-side stream buffers
    # NewestOnly: the line never waits on a backlog; older frames are dropped by the driver.
    buffer_handling: BufferHandling = "NewestOnly"
    timeout_ms: int = 1000  # bound on one GetNextImage / fetch / read
    binning_horizontal: int | None = None
    binning_vertical: int | None = None
    decimation_horizontal: int | None = None
    decimation_vertical: int | None = None
    roi: tuple[int, int, int, int] | None = None  # OffsetX, OffsetY, Width, Height (sensor ROI)
    fps: float | None = None  # pacing for folder/synthetic/video files; AcquisitionFrameRate on cameras
    loop: bool = False  # folder/video replay: start again at the end
    max_pixels: int = MAX_PIXELS  # folder replay: larger images are counted as 'huge' and skipped
    reconnect: bool = True  # on device loss: tear down, re-open with backoff
    reconnect_attempts: int = 5
    reconnect_backoff_s: float = 1.0  # first wait; doubles per attempt, capped at 30 s

    def __post_init__(self) -> None:
        def positive(name: str, value: float | None, *, zero_ok: bool = False) -> None:
            if value is not None and (value < 0 or (value == 0 and not zero_ok)):
                raise ConfigError(f"source option '{name}' must be {'>= 0' if zero_ok else '> 0'}, got {value}")

        positive("exposure_us", self.exposure_us)
        positive("buffer_count", self.buffer_count)
        positive("timeout_ms", self.timeout_ms)
        positive("fps", self.fps)
        positive("max_pixels", self.max_pixels)
        positive("reconnect_attempts", self.reconnect_attempts, zero_ok=True)
        positive("reconnect_backoff_s", self.reconnect_backoff_s, zero_ok=True)
        for name in ("binning_horizontal", "binning_vertical", "decimation_horizontal", "decimation_vertical"):
            positive(name, getattr(self, name))
        if not _LINE.match(self.trigger_line):
            raise ConfigError(
                f"source option 'trigger_line' must look like Line0, Line1, ..., got {self.trigger_line!r}"
            )
        if self.roi is not None:
            x, y, w, h = self.roi
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ConfigError(
                    f"source option 'roi' must be OffsetX,OffsetY,Width,Height with positive size, got {self.roi}"
                )

    @property
    def timeout_s(self) -> float:
        """`timeout_ms` in seconds."""
        return self.timeout_ms / 1000.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0-based): exponential, capped at 30 s.

        Args:
            attempt: 0 for the first retry.

        Returns:
            reconnect_backoff_s * 2**attempt, at most 30.
        """
        return min(self.reconnect_backoff_s * (2.0**attempt), 30.0)
