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
from edge_runtime.sources.base import Held, quietly
from edge_runtime.sources.camera import CameraSource, camera_settings
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.trigger_counters import PySpinNodes
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
            names = [
                ps.CEnumEntryPtr(e).GetSymbolic() for e in node.GetEntries() if ps.IsAvailable(e) and ps.IsReadable(e)
            ]
            raise SourceError(
                f"{self.where}: {name} cannot be {value!r} on this camera (available: {', '.join(names)})"
            )
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


class SpinnakerSource(CameraSource):
    """A FLIR camera through PySpin, configured from SourceOptions (see the module doc).

    Args:
        parsed: `spinnaker://SERIAL`, or `spinnaker://` for the first camera found.
        options: every option but loop and max_pixels is applied to the camera.
    """

    stat_keys = ("incomplete", "device_lost", "camera_skipped", "release_errors", "bad_frame")

    def __init__(self, parsed: SourceUri, options: SourceOptions) -> None:
        super().__init__(parsed.raw, options, parsed.target.strip("/"))
        self._ps: Any = None
        self._system: Any = None
        self._cam_list: Any = None
        self._cam: Any = None

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
                raise SourceError(
                    f"{self.uri}: no camera with serial {self.serial} (found: {', '.join(self._serials())})"
                )
        else:
            self._cam = self._cam_list.GetByIndex(0)
        serial_node = ps.CStringPtr(self._cam.GetTLDeviceNodeMap().GetNode("DeviceSerialNumber"))
        if ps.IsAvailable(serial_node) and ps.IsReadable(serial_node):
            self.camera_serial = str(serial_node.GetValue())
        self._cam.Init()
        self._configure()
        self._cam.BeginAcquisition()
        self._started()
        log.info("%s: acquiring from camera %s with %s", self.uri, self.camera_serial, self.settings)

    def _serials(self) -> list[str]:
        ps = self._ps
        out = []
        for i in range(self._cam_list.GetSize()):
            node = ps.CStringPtr(self._cam_list.GetByIndex(i).GetTLDeviceNodeMap().GetNode("DeviceSerialNumber"))
            out.append(str(node.GetValue()) if ps.IsReadable(node) else "?")
        return out

    def _configure(self) -> None:
        # Spinnaker serves FLIR cameras, which all have the usual nodes: only optional steps
        # may find a node missing.
        n = NodeWriter(self._ps, self._cam.GetNodeMap(), self.uri)
        for step in camera_settings(self.options):
            setter = {str: n.enum, bool: n.bool, int: n.int, float: n.float}[type(step.value)]
            setter(step.name, step.value, required=step.need != "optional")
        s = NodeWriter(self._ps, self._cam.GetTLStreamNodeMap(), self.uri)
        s.enum("StreamBufferHandlingMode", self.options.buffer_handling)
        s.enum("StreamBufferCountMode", "Manual")
        s.int("StreamBufferCountManual", self.options.buffer_count)
        self.settings = {**n.applied, **s.applied}
        self._arm_counters()

    def _release_camera(self) -> None:
        ps = self._ps
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
        """`SourceBase.release_held` for `_cam`, `_cam_list` and `_system`, in FLIR's order:
        EndAcquisition, DeInit, drop the camera, Clear, ReleaseInstance."""
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
    def _fetch(self) -> tuple[Frame | None, str | None]:
        # A lost camera is handled by the caller, outside this except block: its traceback
        # references the camera, which must be gone before a later ReleaseInstance.
        ps = self._ps
        try:
            if self.options.trigger == "software":
                ps.CCommandPtr(self._cam.GetNodeMap().GetNode("TriggerSoftware")).Execute()
            image = self._cam.GetNextImage(int(self.options.timeout_ms))
            received_ns = time.monotonic_ns()
            return self._take(image, received_ns), None
        except ps.SpinnakerException as exc:
            if is_timeout(exc) and self._cam.IsValid():
                self.count("timeouts")
                return None, None
            return None, first_line(exc)

    def _take(self, image: Any, received_ns: int) -> Frame | None:
        ps = self._ps
        bad = ""
        try:
            device_id = int(image.GetFrameID())
            self._note_device_id(device_id)
            if image.IsIncomplete():
                status = image.GetImageStatus()
                describe = getattr(ps, "Image_GetImageStatusDescription", None)
                text = describe(status) if describe else str(status)
                log.debug("%s: incomplete image %d dropped (status %s)", self.uri, device_id, text)
                self.reject(
                    "incomplete", f"camera frame {device_id} incomplete: {text}", received_ns, device_frame_id=device_id
                )
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
            array,
            pixel_format,
            received_ns,
            device_frame_id=device_id,
            device_timestamp_ns=device_ts,
            timestamp_domain="host_monotonic",
        )

    # -- hooks of CameraSource -----------------------------------------------------------
    def _connected(self) -> bool:
        return self._cam is not None

    def _device_answers(self) -> bool:
        return bool(self._cam.IsValid() and self._cam.IsInitialized())

    def _counter_nodes(self) -> PySpinNodes:
        return PySpinNodes(self._ps, self._cam.GetNodeMap())

    def _stream_nodes(self) -> PySpinNodes:
        return PySpinNodes(self._ps, self._cam.GetTLStreamNodeMap())

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        return (self._ps.SpinnakerException,)

    def _attempt_connect(self) -> None:
        error = self._connect_or_error()
        if error is not None:
            self._teardown_camera()
            # A fresh exception: raising `error` itself would make a reference cycle
            # (its traceback holds this frame, which holds it) that keeps old frames alive.
            message = str(error)
            del error
            raise SourceError(message)
