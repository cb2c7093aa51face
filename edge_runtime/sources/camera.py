"""What the GenICam camera sources (spinnaker://, gentl://) share above their SDKs.

`CameraSource` holds the logic that is the same whichever SDK talks to the camera: the one
plan of GenICam settings the options ask for (`camera_settings`), frame-id gaps counted as
frames the camera skipped, the missed-trigger and stream counters, the grab loop's handling of
a lost device, and reconnecting. A subclass supplies the SDK calls through a few hooks (see
`CameraSource`); the SDK's own life-cycle order stays in its module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from edge_runtime.errors import first_line
from edge_runtime.frames import Frame
from edge_runtime.sources.base import SourceBase, retry_with_backoff
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.trigger_counters import CounterNodes, TriggerCounters

log = logging.getLogger(__name__)

_BINNING = ("BinningHorizontal", "BinningVertical", "DecimationHorizontal", "DecimationVertical")


@dataclass(frozen=True)
class Setting:
    """One GenICam node to set, in order.

    Attributes:
        name: the node (SFNC name), e.g. "ExposureTime".
        value: str for an enumeration entry, bool, int or float.
        need: "asked" when the user's options ask for it (a camera without the node is an
            error or a warning), "usual" for a step every camera of the SDK's family is
            expected to have (Spinnaker: error when missing; GenTL: left as is), "optional"
            for a step that is skipped quietly where the node is missing.
    """

    name: str
    value: Any
    need: Literal["asked", "usual", "optional"] = "asked"


def camera_settings(o: SourceOptions) -> list[Setting]:
    """The GenICam nodes `o` asks for, in the order the camera accepts them.

    Args:
        o: the source options.

    Returns:
        The settings, acquisition and trigger first, then exposure, gain, pixel format,
        binning/decimation (they change the sensor size ROI values live in), ROI and rate.
    """
    out = [Setting("AcquisitionMode", "Continuous", "usual")]
    # The trigger source can only change while TriggerMode is Off.
    out.append(Setting("TriggerMode", "Off", "asked" if o.trigger != "off" else "optional"))
    if o.trigger != "off":
        out.append(Setting("TriggerSelector", "FrameStart", "optional"))
        out.append(Setting("TriggerSource", "Software" if o.trigger == "software" else o.trigger_line))
        if o.trigger == "hardware":
            out.append(Setting("TriggerActivation", o.trigger_edge))
        out.append(Setting("TriggerMode", "On"))
    # Auto must be off before the manual value is writable.
    if o.exposure_us is not None:
        out += [Setting("ExposureAuto", "Off", "usual"), Setting("ExposureTime", float(o.exposure_us))]
    if o.gain_db is not None:
        out += [Setting("GainAuto", "Off", "usual"), Setting("Gain", float(o.gain_db))]
    if o.pixel_format:
        out.append(Setting("PixelFormat", o.pixel_format))
    for name in _BINNING:
        value = getattr(o, name.replace("Horizontal", "_horizontal").replace("Vertical", "_vertical").lower())
        if value is not None:
            out.append(Setting(name, int(value)))
    if o.roi is not None:
        x, y, w, h = (int(v) for v in o.roi)
        # Offsets to 0 first so the new width/height fit, then the wanted offsets.
        offsets = [("OffsetX", x), ("OffsetY", y)]
        out += [Setting(name, 0, "asked" if v else "usual") for name, v in offsets]
        out += [Setting("Width", w), Setting("Height", h)]
        out += [Setting(name, v, "asked" if v else "usual") for name, v in offsets]
    if o.fps is not None:
        out += [Setting("AcquisitionFrameRateEnable", True, "optional"), Setting("AcquisitionFrameRate", float(o.fps))]
    return out


class CameraSource(SourceBase):
    """Base of the GenICam camera sources: counters, lost devices and reconnects in one place.

    A subclass implements the SDK calls:
        `_attempt_connect()`: one reconnect try: find, open, configure (calling
            `_arm_counters` last) and start the camera (then `_started`); on failure it
            calls `_teardown_camera` and raises.
        `_fetch() -> (frame, lost)`: fire the software trigger if any and take one buffer;
            `lost` is None unless the device is gone (then a line saying why).
        `_release_camera()`: stop and drop the camera (the SDK's system stays).
        `_connected()`: a camera is held. `_device_answers()`: it can be read now.
        `_counter_nodes()` / `_stream_nodes()`: the device's and the stream's node maps for
            the counters (`_stream_nodes` may return None).
        `_sdk_errors()`: the exceptions an SDK call raises for a device-side failure.

    Args:
        uri: the source URI.
        options: every option but loop and max_pixels is applied to the camera.
        serial: the camera wanted; "" for the first one found.
    """

    applies = frozenset(SourceOptions.__dataclass_fields__) - {"loop", "max_pixels"}

    def __init__(self, uri: str, options: SourceOptions, serial: str) -> None:
        super().__init__(uri, options)
        self.serial = serial
        self.camera_serial = serial
        self.settings: dict[str, Any] = {}  # nodes set on the camera, for logs and tests
        self._last_device_id: int | None = None
        self._counters = TriggerCounters(self.uri, options.trigger, options.trigger_counters)

    # -- acquisition ---------------------------------------------------------------------
    def _grab(self) -> Frame | None:
        if not self._connected():
            self._reconnect()
            return None
        if self._counters.due():
            self._sample_counters()
        frame, lost = self._fetch()
        if lost is None:
            return frame
        # Handled here, outside the SDK's except block: a traceback alive during teardown
        # would still reference the lost camera.
        self._lost(lost)
        return None

    def _note_device_id(self, device_id: int | None) -> None:
        """Count frames the camera or transport dropped before we saw them (id gaps).

        With NewestOnly buffer handling the ones in between were dropped on purpose, and
        still count: they are frames nobody judged.
        """
        if device_id is None:
            return
        last = self._last_device_id
        if last is not None and device_id > last + 1:
            self.count("camera_skipped", device_id - last - 1)
        self._last_device_id = device_id

    def _started(self) -> None:
        """The camera (re)started acquiring: a new stream numbers its frames afresh."""
        self._last_device_id = None

    def _lost(self, why: str) -> None:
        self.count("device_lost")
        log.warning("%s: camera %s lost: %s", self.uri, self.camera_serial, why)
        self._teardown_camera()
        self._reconnect()

    def _reconnect(self) -> None:
        retry_with_backoff(self.uri, self.options, self._attempt_connect, lambda: self._closed)
        if self._connected():
            self.count("reconnects")

    # -- camera counters ----------------------------------------------------------------
    def _frames_seen(self) -> int:
        return sum(self._counts[k] for k in ("delivered", "incomplete", "bad_frame"))

    def _arm_counters(self) -> None:
        """Set up the missed-trigger counters (hardware trigger only), at the end of configuring."""
        o = self.options
        if o.trigger == "hardware":
            self._counters.arm(self._counter_nodes(), o.trigger_line, o.trigger_edge, self._frames_seen())

    def _sample_counters(self) -> None:
        """Trigger counters and the stream's lost/dropped frame counts (register reads: every
        interval_s, at status time while capture is idle, and at close; never per frame)."""
        try:
            self._counters.sample(self._counter_nodes(), self._frames_seen())
            stream = self._stream_nodes()
            if stream is not None:
                self._counters.sample_stream(stream)
        except self._sdk_errors() as exc:  # a device going away: the next grab handles it
            log.debug("%s: camera counters not read: %s", self.uri, first_line(exc))

    def _teardown_camera(self) -> None:
        """Stop and drop the camera; first, while it still answers, the last counter readings
        and the counters' own settings back. Never raises (failures are logged)."""
        if self._connected() and self._device_answers():
            self._sample_counters()
            try:
                self._counters.restore(self._counter_nodes())
            except self._sdk_errors() as exc:
                log.warning("%s: cannot restore counter settings: %s", self.uri, first_line(exc))
        self._counters.end_session()
        self._release_camera()

    def stats(self) -> dict[str, Any]:
        """Counters plus the camera's own.

        Returns:
            The source counters and `trigger_edges`, `missed_triggers`,
            `missed_triggers_source`, `stream_lost`, `stream_dropped` (None when not counted).
        """
        # Read the camera now only if capture is not inside a grab (never wait on it).
        if self._lock.acquire(blocking=False):
            try:
                if self._opened and self._connected() and self._device_answers():
                    self._sample_counters()
            finally:
                self._lock.release()
        return {**super().stats(), **self._counters.stats()}

    # -- for subclasses ------------------------------------------------------------------
    def _attempt_connect(self) -> None:
        raise NotImplementedError

    def _fetch(self) -> tuple[Frame | None, str | None]:
        raise NotImplementedError

    def _release_camera(self) -> None:
        raise NotImplementedError

    def _connected(self) -> bool:
        raise NotImplementedError

    def _device_answers(self) -> bool:
        raise NotImplementedError

    def _counter_nodes(self) -> CounterNodes:
        raise NotImplementedError

    def _stream_nodes(self) -> CounterNodes | None:
        return None

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        return (Exception,)
