"""spinnaker://SERIAL (or spinnaker:// for the first camera) — FLIR cameras through PySpin.

Life cycle as FLIR's Acquisition/Trigger/BufferHandling examples:
System.GetInstance -> GetCameras -> GetBySerial -> Init -> configure GenICam + TL stream
nodes -> BeginAcquisition -> GetNextImage(timeout) / Release ... -> EndAcquisition -> DeInit
-> drop the camera -> CameraList.Clear -> ReleaseInstance.

The SDK refuses ReleaseInstance while anything still references a camera, so this module
never keeps a camera in a local variable that could outlive a call (a suspended generator,
an exception traceback): the one reference is `self._cam`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edge_runtime.deps import require
from edge_runtime.errors import SourceError, first_line
from edge_runtime.frames import Frame
from edge_runtime.sources.base import Held, SourceBase, quietly, retry_with_backoff
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.trigger_counters import PySpinNodes, TriggerCounters
from edge_runtime.sources.uri import SourceUri

log = logging.getLogger(__name__)

PYSPIN_HINT = (
    "install FLIR's Spinnaker SDK and its matching spinnaker_python (PySpin) wheel for this Python "
    "from flir.com; PyPI's 'pyspin' is an unrelated package"
)
SPINNAKER_ERR_TIMEOUT = -1011


def import_pyspin() -> Any:
    """The PySpin module; MissingDependency (one line, with the install hint) when absent."""
    return require("PySpin", purpose="spinnaker:// sources", hint=PYSPIN_HINT)



def is_timeout(exc: BaseException) -> bool:
    """True when a SpinnakerException is GetNextImage's timeout [-1011], not a lost camera."""
    code = getattr(exc, "errorcode", None)
    return code == SPINNAKER_ERR_TIMEOUT or (code is None and str(SPINNAKER_ERR_TIMEOUT) in str(exc))


class NodeWriter:
    """Sets GenICam nodes through PySpin's C*Ptr wrappers with checks and clear errors.

    A node the user asked for that the camera lacks (or holds read-only) is an error:
    an inspection line must not run at an exposure nobody chose."""

    def __init__(self, ps: Any, nodemap: Any, where: str) -> None:
        self.ps, self.nodemap, self.where = ps, nodemap, where
        self.applied: dict[str, Any] = {}

    def _node(self, name: str, wrapper: Any, required: bool) -> Any:
        node = wrapper(self.nodemap.GetNode(name))
        if self.ps.IsAvailable(node) and self.ps.IsWritable(node):
            return node
        if required:
            raise SourceError(f"{self.where}: camera node '{name}' is missing or not writable")
        log.debug("%s: node %s not available, left as is", self.where, name)
        return None

    def enum(self, name: str, value: str, required: bool = True) -> bool:
        """Set enumeration `name` to entry `value`; False when optional and absent."""
        ps = self.ps
        node = self._node(name, ps.CEnumerationPtr, required)
        if node is None:
            return False
        entry = node.GetEntryByName(value)
        if entry is None or not ps.IsAvailable(entry) or not ps.IsReadable(entry):
            names = [ps.CEnumEntryPtr(e).GetSymbolic() for e in node.GetEntries() if ps.IsAvailable(e) and ps.IsReadable(e)]
            raise SourceError(f"{self.where}: {name} cannot be {value!r} on this camera (available: {', '.join(names)})")
        self._apply(name, value, lambda: node.SetIntValue(entry.GetValue()))
        return True

    def float(self, name: str, value: float, required: bool = True) -> bool:
        """Set float `name` within the camera's range; False when optional and absent."""
        node = self._node(name, self.ps.CFloatPtr, required)
        if node is None:
            return False
        lo, hi = node.GetMin(), node.GetMax()
        if not lo <= value <= hi:
            raise SourceError(f"{self.where}: {name}={value} is outside the camera's range [{lo}, {hi}]")
        self._apply(name, value, lambda: node.SetValue(float(value)))
        return True

    def int(self, name: str, value: int, required: bool = True) -> bool:
        """Set integer `name` within range and step; False when optional and absent."""
        node = self._node(name, self.ps.CIntegerPtr, required)
        if node is None:
            return False
        lo, hi, inc = node.GetMin(), node.GetMax(), max(1, node.GetInc())
        if not lo <= value <= hi or (value - lo) % inc:
            raise SourceError(f"{self.where}: {name}={value} is not allowed (range [{lo}, {hi}], step {inc})")
        self._apply(name, value, lambda: node.SetValue(int(value)))
        return True

    def bool(self, name: str, value: bool, required: bool = True) -> bool:
        """Set boolean `name`; False when optional and absent."""
        node = self._node(name, self.ps.CBooleanPtr, required)
        if node is None:
            return False
        self._apply(name, value, lambda: node.SetValue(bool(value)))
        return True

    def _apply(self, name: str, value: Any, setter: Any) -> None:
        try:
            setter()
        except self.ps.SpinnakerException as exc:
            raise SourceError(f"{self.where}: cannot set {name}={value}: {first_line(exc)}") from None
        self.applied[name] = value


class SpinnakerSource(SourceBase):
    """A FLIR camera through PySpin, configured from SourceOptions (see the module doc).

    Args:
        parsed: `spinnaker://SERIAL`, or `spinnaker://` for the first camera found.
        options: every option but loop and max_pixels is applied to the camera.
    """

    stat_keys = ("incomplete", "device_lost", "camera_skipped", "release_errors", "bad_frame")
    applies = frozenset(SourceOptions.__dataclass_fields__) - {"loop", "max_pixels"}

    def __init__(self, parsed: SourceUri, options: SourceOptions) -> None:
        super().__init__(parsed.raw, options)
        self.serial = parsed.target.strip("/")
        self.camera_serial = self.serial
        self.settings: dict[str, Any] = {}  # nodes set on the camera, for logs and tests
        self._ps: Any = None
        self._system: Any = None
        self._cam_list: Any = None
        self._cam: Any = None
        self._last_device_id: int | None = None
        self._counters = TriggerCounters(self.uri, options.trigger, options.trigger_counters)

    # -- life cycle ---------------------------------------------------------------------
    def _open(self) -> None:
        ps = self._ps = import_pyspin()
        self._system = ps.System.GetInstance()
        v = self._system.GetLibraryVersion()
        log.info("Spinnaker library %d.%d.%d.%d", v.major, v.minor, v.type, v.build)
        error = self._connect_or_error()
        if error is not None:
            self._close()
            raise error

    def _connect_or_error(self) -> SourceError | None:
        # Turn SDK exceptions into our own *after* leaving the except block, so that no
        # traceback (holding frames) is alive when the caller releases the system.
        try:
            self._connect()
            return None
        except SourceError as exc:
            message = str(exc)
        except self._ps.SpinnakerException as exc:
            message = f"{self.uri}: cannot start camera: {first_line(exc)}"
        return SourceError(message)

    def _connect(self) -> None:
        ps = self._ps
        if self._cam_list is not None:
            self._cam_list.Clear()
        self._cam_list = self._system.GetCameras()
        if self._cam_list.GetSize() == 0:
            raise SourceError(f"{self.uri}: no Spinnaker camera found (check cable, usbfs memory, udev rules)")
        if self.serial:
            self._cam = self._cam_list.GetBySerial(self.serial)
            if self._cam is None or not self._cam.IsValid():
                self._cam = None
                raise SourceError(f"{self.uri}: no camera with serial {self.serial} (found: {', '.join(self._serials())})")
        else:
            self._cam = self._cam_list.GetByIndex(0)
        serial_node = ps.CStringPtr(self._cam.GetTLDeviceNodeMap().GetNode("DeviceSerialNumber"))
        if ps.IsAvailable(serial_node) and ps.IsReadable(serial_node):
            self.camera_serial = str(serial_node.GetValue())
        self._cam.Init()
        self._configure()
        self._cam.BeginAcquisition()
        self._last_device_id = None
        log.info("%s: acquiring from camera %s with %s", self.uri, self.camera_serial, self.settings)

    def _serials(self) -> list[str]:
        ps = self._ps
        out = []
        for i in range(self._cam_list.GetSize()):
            node = ps.CStringPtr(self._cam_list.GetByIndex(i).GetTLDeviceNodeMap().GetNode("DeviceSerialNumber"))
            out.append(str(node.GetValue()) if ps.IsReadable(node) else "?")
        return out

    def _configure(self) -> None:
        o = self.options
        n = NodeWriter(self._ps, self._cam.GetNodeMap(), self.uri)
        n.enum("AcquisitionMode", "Continuous")
        # The trigger source can only change while TriggerMode is Off.
        n.enum("TriggerMode", "Off", required=o.trigger != "off")
        if o.trigger != "off":
            n.enum("TriggerSelector", "FrameStart", required=False)
            n.enum("TriggerSource", "Software" if o.trigger == "software" else o.trigger_line)
            if o.trigger == "hardware":
                n.enum("TriggerActivation", o.trigger_edge)
            n.enum("TriggerMode", "On")
        # Auto must be off before the manual value is writable.
        if o.exposure_us is not None:
            n.enum("ExposureAuto", "Off")
            n.float("ExposureTime", o.exposure_us)
        if o.gain_db is not None:
            n.enum("GainAuto", "Off")
            n.float("Gain", o.gain_db)
        if o.pixel_format:
            n.enum("PixelFormat", o.pixel_format)
        # Binning/decimation first: they change the sensor size that ROI values live in.
        for name in ("BinningHorizontal", "BinningVertical", "DecimationHorizontal", "DecimationVertical"):
            value = getattr(o, name.replace("Horizontal", "_horizontal").replace("Vertical", "_vertical").lower())
            if value is not None:
                n.int(name, value)
        if o.roi is not None:
            x, y, w, h = o.roi
            # Offsets to 0 first so the new width/height fit, then the wanted offsets.
            n.int("OffsetX", 0)
            n.int("OffsetY", 0)
            n.int("Width", w)
            n.int("Height", h)
            n.int("OffsetX", x)
            n.int("OffsetY", y)
        if o.fps is not None:
            n.bool("AcquisitionFrameRateEnable", True, required=False)
            n.float("AcquisitionFrameRate", o.fps)
        s = NodeWriter(self._ps, self._cam.GetTLStreamNodeMap(), self.uri)
        s.enum("StreamBufferHandlingMode", o.buffer_handling)
        s.enum("StreamBufferCountMode", "Manual")
        s.int("StreamBufferCountManual", o.buffer_count)
        self.settings = {**n.applied, **s.applied}
        if o.trigger == "hardware":
            self._counters.arm(PySpinNodes(self._ps, self._cam.GetNodeMap()), o.trigger_line, o.trigger_edge, self._frames_seen())

    def _teardown_camera(self) -> None:
        ps = self._ps
        if self._cam is not None and self._cam.IsValid() and self._cam.IsInitialized():
            # The last counter readings, then the counters' own settings back, while the camera
            # still answers (before EndAcquisition/DeInit).
            self._sample_counters()
            try:
                self._counters.restore(PySpinNodes(ps, self._cam.GetNodeMap()))
            except ps.SpinnakerException as exc:
                log.warning("%s: cannot restore counter settings: %s", self.uri, first_line(exc))
        self._counters.end_session()
        if self._cam is not None:
            for step in ("EndAcquisition", "DeInit"):
                try:
                    active = self._cam.IsStreaming() if step == "EndAcquisition" else self._cam.IsInitialized()
                    if active:
                        getattr(self._cam, step)()
                except ps.SpinnakerException as exc:
                    log.warning("%s: %s failed: %s", self.uri, step, first_line(exc))
            self._cam = None  # `del cam`: the list and the system may only go after this
        if self._cam_list is not None:
            try:
                self._cam_list.Clear()
            except ps.SpinnakerException as exc:
                log.warning("%s: CameraList.Clear failed: %s", self.uri, first_line(exc))
            self._cam_list = None

    def _close(self) -> None:
        self._teardown_camera()
        if self._system is not None:
            try:
                self._system.ReleaseInstance()
            except self._ps.SpinnakerException as exc:
                log.error("%s: ReleaseInstance failed: %s", self.uri, first_line(exc))
            self._system = None

    # What release_held frees if the source is dropped without close().
    _cam = Held()
    _cam_list = Held()
    _system = Held()

    @staticmethod
    def release_held(uri: str, held: dict[str, Any]) -> None:
        """Finalizer, in FLIR's order: EndAcquisition, DeInit, drop the camera, Clear, ReleaseInstance.

        Args:
            uri: the source's URI, for messages.
            held: `_cam`, `_cam_list` and `_system` as the source left them.
        """
        cam = held.pop("_cam", None)
        if cam is not None:
            quietly(uri, "EndAcquisition", lambda: cam.IsStreaming() and cam.EndAcquisition())
            quietly(uri, "DeInit", lambda: cam.IsInitialized() and cam.DeInit())
        cam = None  # ReleaseInstance refuses while anything references a camera
        cam_list = held.pop("_cam_list", None)
        if cam_list is not None:
            quietly(uri, "CameraList.Clear", cam_list.Clear)
        system = held.pop("_system", None)
        if system is not None:
            quietly(uri, "ReleaseInstance", system.ReleaseInstance)

    # -- acquisition --------------------------------------------------------------------
    def _grab(self) -> Frame | None:
        ps = self._ps
        if self._cam is None:
            self._reconnect()
            return None
        if self._counters.due():
            self._sample_counters()
        lost = ""
        try:
            if self.options.trigger == "software":
                ps.CCommandPtr(self._cam.GetNodeMap().GetNode("TriggerSoftware")).Execute()
            image = self._cam.GetNextImage(int(self.options.timeout_ms))
            received_ns = time.monotonic_ns()
            return self._take(image, received_ns)
        except ps.SpinnakerException as exc:
            if is_timeout(exc) and self._cam.IsValid():
                self.count("timeouts")
                return None
            lost = first_line(exc)
        # Handled outside the except block: its traceback references the lost camera,
        # which must be gone before a later ReleaseInstance.
        self._lost(lost)
        return None

    def _take(self, image: Any, received_ns: int) -> Frame | None:
        ps = self._ps
        bad = ""
        try:
            device_id = int(image.GetFrameID())
            if self._last_device_id is not None and device_id > self._last_device_id + 1:
                # NewestOnly hands us the latest buffer; the ones in between were dropped.
                self.count("camera_skipped", device_id - self._last_device_id - 1)
            self._last_device_id = device_id
            if image.IsIncomplete():
                status = image.GetImageStatus()
                describe = getattr(ps, "Image_GetImageStatusDescription", None)
                text = describe(status) if describe else str(status)
                log.debug("%s: incomplete image %d dropped (status %s)", self.uri, device_id, text)
                self.reject("incomplete", f"camera frame {device_id} incomplete: {text}", received_ns, device_frame_id=device_id)
                return None
            try:
                # GetNDArray views the driver's buffer, which is reused after Release(): copy.
                array = np.array(image.GetNDArray(), copy=True)
                pixel_format = str(image.GetPixelFormatName())
                device_ts = int(image.GetTimeStamp())
            except ps.SpinnakerException as exc:
                # This buffer only (e.g. a pixel format GetNDArray cannot map): not a lost camera.
                bad = f"camera frame {device_id} unreadable: {first_line(exc)}"
        finally:
            try:
                image.Release()
            except ps.SpinnakerException as exc:
                self.count("release_errors")
                log.warning("%s: image Release failed: %s", self.uri, first_line(exc))
        if bad:
            self.reject("bad_frame", bad, received_ns, device_frame_id=device_id)
            return None
        return self.make_frame(
            array, pixel_format, received_ns, device_frame_id=device_id, device_timestamp_ns=device_ts, timestamp_domain="host_monotonic"
        )

    # -- camera counters ----------------------------------------------------------------
    def _frames_seen(self) -> int:
        return sum(self._counts[k] for k in ("delivered", "incomplete", "bad_frame"))

    def _sample_counters(self) -> None:
        """Trigger counters and TL stream statistics (register reads: every interval_s, at
        status time while capture is idle, and at close; never per frame)."""
        ps = self._ps
        try:
            self._counters.sample(PySpinNodes(ps, self._cam.GetNodeMap()), self._frames_seen())
            self._counters.sample_stream(PySpinNodes(ps, self._cam.GetTLStreamNodeMap()))
        except ps.SpinnakerException as exc:  # a camera going away: the next grab handles it
            log.debug("%s: camera counters not read: %s", self.uri, first_line(exc))

    def stats(self) -> dict[str, Any]:
        """Counters plus the camera's: `trigger_edges`, `missed_triggers`,
        `missed_triggers_source`, `stream_lost`, `stream_dropped` (None when not counted)."""
        # Read the camera now only if capture is not inside a grab (never wait on it).
        if self._lock.acquire(blocking=False):
            try:
                if self._cam is not None and self._opened and self._cam.IsValid() and self._cam.IsInitialized():
                    self._sample_counters()
            finally:
                self._lock.release()
        return {**super().stats(), **self._counters.stats()}

    def _lost(self, why: str) -> None:
        self.count("device_lost")
        log.warning("%s: camera %s lost: %s", self.uri, self.camera_serial, why)
        self._teardown_camera()
        self._reconnect()

    def _reconnect(self) -> None:
        def attempt() -> None:
            error = self._connect_or_error()
            if error is not None:
                self._teardown_camera()
                # A fresh exception: raising `error` itself would make a reference cycle
                # (its traceback holds this frame, which holds it) that keeps old frames alive.
                message = str(error)
                del error
                raise SourceError(message)

        retry_with_backoff(self.uri, self.options, attempt, lambda: self._closed)
        if self._cam is not None:
            self.count("reconnects")
