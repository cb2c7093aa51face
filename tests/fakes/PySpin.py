"""A stand-in for FLIR's PySpin (Spinnaker SDK Python wrapper) for tests without a camera.

Same class, function and method names as PySpin, used in the GenICam node style of FLIR's
examples (CEnumerationPtr / CFloatPtr / CIntegerPtr / CBooleanPtr / CCommandPtr /
CStringPtr + IsAvailable / IsReadable / IsWritable). Semantics that matter on a line and
that this fake enforces:

- System.GetInstance() is a ref-counted singleton; ReleaseInstance() raises
  SpinnakerException [-1004] while any Python object still references a camera (a CameraPtr
  or an uncleared CameraList), as the SDK does.
- Nodes follow camera rules: TriggerSource/Selector/Activation are writable only with
  TriggerMode Off; ExposureTime/Gain only with ExposureAuto/GainAuto Off; PixelFormat, ROI,
  binning and the TL stream nodes are locked while streaming; Width/Height have a step and
  a maximum that depends on binning/decimation and offset; out-of-range sets raise.
- BeginAcquisition allocates the stream buffer pool (StreamBufferCountManual when
  StreamBufferCountMode is Manual, else 10). GetNextImage(timeout_ms) takes a buffer; the
  buffer returns to the pool only on Image.Release(), and its memory is overwritten then
  (GetNDArray is a view, as in the SDK). With every buffer held, acquisition starves and
  GetNextImage times out. Timeouts sleep the requested time and raise [-1011]; an infinite
  timeout on a frame that will never come raises RuntimeError instead of hanging the test.
- AcquisitionMode SingleFrame delivers one frame per acquisition; TriggerMode On delivers
  one frame per TriggerSoftware.Execute() (or FakeDevice.pulse() for a hardware line).
- A hardware trigger edge that arrives while the sensor is still busy with the previous
  triggered frame (ExposureTime + readout not yet elapsed) or while acquisition is stopped
  makes no exposure and no image: a missed trigger (`fake_missed` is the truth).
- Counter and Timer Control as on a Blackfly S: CounterSelector Counter0/Counter1 selects
  CounterEventSource (Line0..3, ExposureStart, ...), CounterEventActivation, CounterTriggerSource,
  CounterResetSource, CounterDuration, CounterValue (read-only), CounterStatus and the
  CounterReset command. A counter counts while its event source is set, its trigger source is
  Off and its value is below CounterDuration (then CounterCompleted: it stops).
- TL stream statistics: StreamLostFrameCount (a frame the camera made found no free host
  buffer) and StreamDroppedFrameCount.
- Stricter than the SDK (documented): DeInit while streaming raises, so that the order
  EndAcquisition -> DeInit is checked.

Test control lives in functions and attributes prefixed `fake_` (not part of PySpin).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

# -- constants (names as in PySpin) ---------------------------------------------------------
SPINNAKER_ERR_SUCCESS = 0
SPINNAKER_ERR_ERROR = -1001
SPINNAKER_ERR_NOT_INITIALIZED = -1002
SPINNAKER_ERR_RESOURCE_IN_USE = -1004
SPINNAKER_ERR_ACCESS_DENIED = -1005
SPINNAKER_ERR_INVALID_PARAMETER = -1009
SPINNAKER_ERR_IO = -1010
SPINNAKER_ERR_TIMEOUT = -1011
SPINNAKER_ERR_ABORT = -1012

SPINNAKER_IMAGE_STATUS_NO_ERROR = 0
SPINNAKER_IMAGE_STATUS_MISSING_PACKETS = 4

EVENT_TIMEOUT_INFINITE = 0xFFFFFFFFFFFFFFFF
EVENT_TIMEOUT_NONE = 0

NI, NA, WO, RO, RW = 0, 1, 2, 3, 4
intfIValue, intfIBase, intfIInteger, intfIBoolean, intfICommand, intfIFloat, intfIString = range(7)
intfIRegister, intfICategory, intfIEnumeration, intfIEnumEntry, intfIPort = range(7, 12)

_STATUS_TEXT = {0: "Image has no error", 4: "Image has missing packets"}


class SpinnakerException(Exception):
    def __init__(self, message: str, errorcode: int = SPINNAKER_ERR_ERROR) -> None:
        self.errorcode = errorcode
        self.message = message
        self.fullmessage = f"Spinnaker: {message} [{errorcode}]"
        super().__init__(self.fullmessage)


def Image_GetImageStatusDescription(status: int) -> str:
    return _STATUS_TEXT.get(int(status), f"Image status {status}")


# -- test control ---------------------------------------------------------------------------
fake_calls: list[tuple[str, ...]] = []  # SDK life-cycle calls in order
_devices: dict[str, FakeDevice] = {}
_system: System | None = None
_camera_refs: weakref.WeakSet[CameraPtr] = weakref.WeakSet()


def fake_reset() -> None:
    global _system
    fake_calls.clear()
    _devices.clear()
    _system = None


def fake_add_camera(serial: str, **kwargs: Any) -> FakeDevice:
    dev = FakeDevice(serial, **kwargs)
    _devices[serial] = dev
    return dev


def fake_live_camera_refs() -> int:
    return sum(1 for c in list(_camera_refs) if c._device is not None)


def fake_system_alive() -> bool:
    return _system is not None and _system._refs > 0


# -- GenICam nodes --------------------------------------------------------------------------
class _Node:
    def __init__(
        self,
        name: str,
        kind: int,
        value: Any = None,
        *,
        entries: tuple[str, ...] = (),
        lo: Any = None,
        hi: Any = None,
        inc: int = 1,
        writable: Callable[[], bool] = lambda: True,
        on_set: Callable[[Any], None] | None = None,
        execute: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.kind, self.value = name, kind, value
        self.entries = [_EnumEntry(self, i, s) for i, s in enumerate(entries)]
        self._lo, self._hi, self._inc = lo, hi, inc
        self._writable, self._on_set, self._execute = writable, on_set, execute
        self.fake_sets: list[Any] = []

    def lo(self) -> Any:
        return self._lo() if callable(self._lo) else self._lo

    def hi(self) -> Any:
        return self._hi() if callable(self._hi) else self._hi

    def GetName(self) -> str:
        return self.name

    def GetPrincipalInterfaceType(self) -> int:
        return self.kind

    def set(self, value: Any) -> None:
        if not self._writable():
            raise SpinnakerException(
                f"GenICam::AccessException= Node is not writable. : AccessException thrown in node '{self.name}'",
                SPINNAKER_ERR_ACCESS_DENIED,
            )
        if self.kind in (intfIFloat, intfIInteger):
            lo, hi = self.lo(), self.hi()
            if not lo <= value <= hi:
                raise SpinnakerException(
                    f"GenICam::OutOfRangeException= Value {value} must be within [{lo}, {hi}] in node '{self.name}'",
                    SPINNAKER_ERR_INVALID_PARAMETER,
                )
            if self.kind == intfIInteger and (value - lo) % self._inc:
                raise SpinnakerException(
                    f"GenICam::OutOfRangeException= Value {value} must be a multiple of {self._inc} in node '{self.name}'",
                    SPINNAKER_ERR_INVALID_PARAMETER,
                )
        self.value = value
        self.fake_sets.append(value)
        if self._on_set:
            self._on_set(value)


class _Selected(_Node):
    """A node whose value belongs to the counter CounterSelector currently selects."""

    def __init__(self, device: FakeDevice, name: str, kind: int, **kw: Any) -> None:
        self._device = device
        super().__init__(name, kind, None, **kw)

    @property
    def value(self) -> Any:
        return self._device.counters[self._device._v("CounterSelector")][self.name]

    @value.setter
    def value(self, v: Any) -> None:
        if v is not None:
            self._device.counters[self._device._v("CounterSelector")][self.name] = v


class _Computed(_Node):
    """A read-only node whose value the device computes (statistics, status)."""

    def __init__(self, name: str, kind: int, getter: Callable[[], Any], **kw: Any) -> None:
        self._getter = getter
        super().__init__(name, kind, None, writable=lambda: False, lo=0, hi=2**63 - 1, **kw)

    @property
    def value(self) -> Any:
        return self._getter()

    @value.setter
    def value(self, v: Any) -> None:
        pass


class _EnumEntry:
    kind = intfIEnumEntry

    def __init__(self, node: _Node, value: int, symbolic: str) -> None:
        self.node, self.value, self.symbolic = node, value, symbolic

    def GetName(self) -> str:
        return f"EnumEntry_{self.node.name}_{self.symbolic}"


class INodeMap:
    def __init__(self, nodes: list[_Node]) -> None:
        self._nodes = {n.name: n for n in nodes}

    def GetNode(self, name: str) -> _Node | None:
        return self._nodes.get(name)

    def GetNodes(self) -> list[_Node]:
        return list(self._nodes.values())


class _Ptr:
    _kinds: tuple[int, ...] = ()

    def __init__(self, node: Any) -> None:
        if isinstance(node, _Ptr):
            node = node._node
        # A cast to the wrong interface gives a null pointer, as in GenApi.
        self._node = node if node is not None and getattr(node, "kind", None) in self._kinds else None

    def _n(self) -> Any:
        if self._node is None:
            raise SpinnakerException("Node pointer is NULL", SPINNAKER_ERR_ERROR)
        return self._node

    def GetName(self) -> str:
        return self._n().name

    def GetAccessMode(self) -> int:
        return _access(self)


class CValuePtr(_Ptr):
    _kinds = (intfIInteger, intfIFloat, intfIBoolean, intfIEnumeration, intfIString)

    def ToString(self) -> str:
        n = self._n()
        return n.entries[n.value].symbolic if n.kind == intfIEnumeration else str(n.value)


class CFloatPtr(CValuePtr):
    _kinds = (intfIFloat,)

    def GetValue(self) -> float:
        return float(self._n().value)

    def SetValue(self, value: float) -> None:
        self._n().set(float(value))

    def GetMin(self) -> float:
        return float(self._n().lo())

    def GetMax(self) -> float:
        return float(self._n().hi())

    def GetUnit(self) -> str:
        return ""


class CIntegerPtr(CValuePtr):
    _kinds = (intfIInteger,)

    def GetValue(self) -> int:
        return int(self._n().value)

    def SetValue(self, value: int) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError("in method 'IInteger_SetValue', argument 2 of type 'int64_t'")
        self._n().set(int(value))

    def GetMin(self) -> int:
        return int(self._n().lo())

    def GetMax(self) -> int:
        return int(self._n().hi())

    def GetInc(self) -> int:
        return int(self._n()._inc)


class CBooleanPtr(CValuePtr):
    _kinds = (intfIBoolean,)

    def GetValue(self) -> bool:
        return bool(self._n().value)

    def SetValue(self, value: bool) -> None:
        self._n().set(bool(value))


class CStringPtr(CValuePtr):
    _kinds = (intfIString,)

    def GetValue(self) -> str:
        return str(self._n().value)


class CCommandPtr(_Ptr):
    _kinds = (intfICommand,)

    def Execute(self) -> None:
        n = self._n()
        if not n._writable():
            raise SpinnakerException(
                f"GenICam::AccessException= Node is not writable. : AccessException thrown in node '{n.name}'",
                SPINNAKER_ERR_ACCESS_DENIED,
            )
        n.fake_sets.append("Execute")
        assert n._execute is not None
        n._execute()

    def IsDone(self) -> bool:
        return True


class CEnumEntryPtr(_Ptr):
    _kinds = (intfIEnumEntry,)

    def GetValue(self) -> int:
        return self._n().value

    def GetSymbolic(self) -> str:
        return self._n().symbolic

    def GetName(self) -> str:
        return self._n().GetName()


class CEnumerationPtr(CValuePtr):
    _kinds = (intfIEnumeration,)

    def GetEntryByName(self, symbolic: str) -> CEnumEntryPtr | None:
        for e in self._n().entries:
            if e.symbolic == symbolic:
                return CEnumEntryPtr(e)
        return None

    def GetEntries(self) -> list[_EnumEntry]:
        return list(self._n().entries)

    def GetCurrentEntry(self) -> CEnumEntryPtr:
        n = self._n()
        return CEnumEntryPtr(n.entries[n.value])

    def GetIntValue(self) -> int:
        return int(self._n().value)

    def SetIntValue(self, value: int) -> None:
        n = self._n()
        if not 0 <= value < len(n.entries):
            raise SpinnakerException(
                f"GenICam::InvalidArgumentException= value {value} is not an entry of '{n.name}'",
                SPINNAKER_ERR_INVALID_PARAMETER,
            )
        n.set(int(value))


def _raw(ptr: Any) -> Any:
    if ptr is None:
        return None
    return ptr._node if isinstance(ptr, _Ptr) else ptr


def IsAvailable(ptr: Any) -> bool:
    return _raw(ptr) is not None


def IsReadable(ptr: Any) -> bool:
    n = _raw(ptr)
    return n is not None and getattr(n, "kind", None) != intfICommand


def IsWritable(ptr: Any) -> bool:
    n = _raw(ptr)
    return isinstance(n, _Node) and n._writable()


def _access(ptr: Any) -> int:
    if not IsAvailable(ptr):
        return NA
    return RW if IsWritable(ptr) else RO


# -- the simulated device -------------------------------------------------------------------
class FakeDevice:
    """One simulated FLIR camera. Test knobs:

    incomplete_ids: device frame ids delivered with IsIncomplete() True.
    lose_after: after this many frames the device drops off the bus (GetNextImage raises
        [-1012], IsValid() turns False) and stays absent for `absent_for` enumerations.
    stall: the next `stall` grabs find no frame and time out.
    readout_us: sensor readout after the exposure; a trigger edge sooner than ExposureTime +
        readout_us after the last accepted one is missed.
    counters: False for a camera without Counter and Timer Control nodes.
    counter_max: the largest CounterValue/CounterDuration (the counter width).
    """

    def __init__(
        self,
        serial: str,
        *,
        width: int = 64,
        height: int = 48,
        pixel_formats: tuple[str, ...] = ("BayerRG8", "Mono8", "RGB8"),
        incomplete_ids: tuple[int, ...] = (),
        lose_after: int | None = None,
        absent_for: int = 0,
        model: str = "Blackfly S BFS-U3-16S2C",
        readout_us: float = 0.0,
        counters: bool = True,
        counter_max: int = 0xFFFFFFFF,
    ) -> None:
        self.serial, self.sensor = serial, (width, height)
        self.incomplete_ids = set(incomplete_ids)
        self.lose_after, self.absent_for = lose_after, absent_for
        self.stall = 0
        self.connected = True
        self.generation = 0
        self.frames_made = 0
        self.frame_id = 0
        self.pending_triggers = 0
        self.initialized = False
        self.streaming = False
        self.pool: list[np.ndarray] = []
        self.out: set[int] = set()  # ids of buffers handed out and not released
        self.leaked_at_end = 0  # buffers still held at EndAcquisition
        self.starved = 0
        self.delivered_this_acq = 0
        self.readout_us = readout_us
        self.busy_until = float("-inf")  # sensor clock (s) when the last accepted trigger's frame is read out
        self.fake_edges = 0  # trigger edges on the configured line while triggering on it
        self.fake_missed = 0  # of those, edges that made no exposure: the truth tests compare with
        self.exposures = 0
        self.stream_lost = 0
        self.stream_dropped = 0
        self.counter_max = counter_max
        self.counters = {
            c: {
                "CounterEventSource": 0,
                "CounterEventActivation": 3,
                "CounterTriggerSource": 0,
                "CounterResetSource": 0,
                "CounterDuration": counter_max,
                "CounterValue": 0,
            }
            for c in ("Counter0", "Counter1")
        }
        self._build_nodes(model, pixel_formats)
        if not counters:
            for name in [n for n in self.nodemap._nodes if n.startswith("Counter")]:
                del self.nodemap._nodes[name]

    # nodes ------------------------------------------------------------------------------
    def _v(self, name: str) -> Any:
        n = self.nodemap.GetNode(name) or self.stream_nodemap.GetNode(name)
        return n.entries[n.value].symbolic if n.kind == intfIEnumeration else n.value

    def _build_nodes(self, model: str, pixel_formats: tuple[str, ...]) -> None:
        idle = lambda: not self.streaming  # noqa: E731
        trig_off = lambda: self._v("TriggerMode") == "Off"  # noqa: E731
        sw, sh = self.sensor

        def max_w() -> int:
            return sw // (self._v("BinningHorizontal") * self._v("DecimationHorizontal"))

        def max_h() -> int:
            return sh // (self._v("BinningVertical") * self._v("DecimationVertical"))

        def clamp_roi(_: Any = None) -> None:
            # The camera shrinks ROI values that no longer fit after binning changes.
            for size, off, mx in (("Width", "OffsetX", max_w), ("Height", "OffsetY", max_h)):
                s, o = self.nodemap.GetNode(size), self.nodemap.GetNode(off)
                s.value = min(s.value, mx() - (mx() % s._inc))
                o.value = min(o.value, mx() - s.value)

        def enum(
            name: str,
            entries: tuple[str, ...],
            default: str,
            writable: Callable[[], bool] = lambda: True,
            on_set: Any = None,
        ) -> _Node:
            return _Node(
                name, intfIEnumeration, entries.index(default), entries=entries, writable=writable, on_set=on_set
            )

        def binning(name: str) -> _Node:
            return _Node(name, intfIInteger, 1, lo=1, hi=4, writable=idle, on_set=clamp_roi)

        nodes = [
            enum("AcquisitionMode", ("Continuous", "SingleFrame", "MultiFrame"), "SingleFrame", idle),
            enum("TriggerMode", ("Off", "On"), "Off"),
            enum("TriggerSelector", ("FrameStart", "AcquisitionStart"), "FrameStart", trig_off),
            enum("TriggerSource", ("Software", "Line0", "Line1", "Line2", "Line3"), "Line0", trig_off),
            enum("TriggerActivation", ("RisingEdge", "FallingEdge", "AnyEdge"), "RisingEdge", trig_off),
            _Node(
                "TriggerSoftware",
                intfICommand,
                writable=lambda: self._v("TriggerMode") == "On" and self._v("TriggerSource") == "Software",
                execute=self._trigger,
            ),
            enum("ExposureAuto", ("Off", "Once", "Continuous"), "Continuous"),
            _Node(
                "ExposureTime",
                intfIFloat,
                5000.0,
                lo=6.0,
                hi=30_000_000.0,
                writable=lambda: self._v("ExposureAuto") == "Off",
            ),
            enum("GainAuto", ("Off", "Once", "Continuous"), "Continuous"),
            _Node("Gain", intfIFloat, 0.0, lo=0.0, hi=47.99, writable=lambda: self._v("GainAuto") == "Off"),
            enum("PixelFormat", pixel_formats, pixel_formats[0], idle),
            binning("BinningHorizontal"),
            binning("BinningVertical"),
            binning("DecimationHorizontal"),
            binning("DecimationVertical"),
            _Node("Width", intfIInteger, sw, lo=16, hi=lambda: max_w() - self._v("OffsetX"), inc=4, writable=idle),
            _Node("Height", intfIInteger, sh, lo=8, hi=lambda: max_h() - self._v("OffsetY"), inc=2, writable=idle),
            _Node("OffsetX", intfIInteger, 0, lo=0, hi=lambda: max_w() - self._v("Width"), inc=4, writable=idle),
            _Node("OffsetY", intfIInteger, 0, lo=0, hi=lambda: max_h() - self._v("Height"), inc=2, writable=idle),
            _Node("AcquisitionFrameRateEnable", intfIBoolean, False),
            _Node(
                "AcquisitionFrameRate",
                intfIFloat,
                30.0,
                lo=1.0,
                hi=200.0,
                writable=lambda: bool(self._v("AcquisitionFrameRateEnable")),
            ),
            *self._counter_nodes(),
        ]
        self.nodemap = INodeMap(nodes)
        self.stream_nodemap = INodeMap(
            [
                enum(
                    "StreamBufferHandlingMode",
                    ("OldestFirst", "OldestFirstOverwrite", "NewestOnly", "NewestFirst"),
                    "OldestFirst",
                    idle,
                ),
                enum("StreamBufferCountMode", ("Auto", "Manual"), "Auto", idle),
                _Node(
                    "StreamBufferCountManual",
                    intfIInteger,
                    10,
                    lo=1,
                    hi=100,
                    writable=lambda: idle() and self._v("StreamBufferCountMode") == "Manual",
                ),
                _Computed("StreamLostFrameCount", intfIInteger, lambda: self.stream_lost),
                _Computed("StreamDroppedFrameCount", intfIInteger, lambda: self.stream_dropped),
            ]
        )
        self.tl_nodemap = INodeMap(
            [
                _Node("DeviceSerialNumber", intfIString, self.serial, writable=lambda: False),
                _Node("DeviceModelName", intfIString, model, writable=lambda: False),
            ]
        )

    def _counter_nodes(self) -> list[_Node]:
        sources = (
            "Off",
            "MHzTick",
            "Line0",
            "Line1",
            "Line2",
            "Line3",
            "UserOutput0",
            "UserOutput1",
            "UserOutput2",
            "UserOutput3",
            "Counter0Start",
            "Counter1Start",
            "Counter0End",
            "Counter1End",
            "LogicBlock0",
            "LogicBlock1",
            "ExposureStart",
            "ExposureEnd",
            "FrameTriggerWait",
        )
        activations = ("LevelLow", "LevelHigh", "FallingEdge", "RisingEdge", "AnyEdge")
        triggers = tuple(x for x in sources if x != "MHzTick")

        def selected(name: str, kind: int, **kw: Any) -> _Node:
            return _Selected(self, name, kind, **kw)

        def reset() -> None:
            self.counters[self._v("CounterSelector")]["CounterValue"] = 0

        return [
            _Node("CounterSelector", intfIEnumeration, 0, entries=("Counter0", "Counter1")),
            selected("CounterEventSource", intfIEnumeration, entries=sources),
            selected("CounterEventActivation", intfIEnumeration, entries=activations),
            selected("CounterTriggerSource", intfIEnumeration, entries=triggers),
            selected("CounterResetSource", intfIEnumeration, entries=triggers),
            selected("CounterDuration", intfIInteger, lo=1, hi=self.counter_max),
            selected("CounterValue", intfIInteger, lo=0, hi=self.counter_max, writable=lambda: False),
            _Computed(
                "CounterStatus",
                intfIEnumeration,
                lambda: self.counter_status(self._v("CounterSelector")),
                entries=("CounterIdle", "CounterTriggerWait", "CounterActive", "CounterCompleted", "CounterOverflow"),
            ),
            _Node("CounterReset", intfICommand, execute=reset),
        ]

    def value(self, name: str) -> Any:
        """Current value of a camera or stream node (symbolic for enums)."""
        return self._v(name)

    # counters ----------------------------------------------------------------------------
    def counter_status(self, counter: str) -> int:
        c = self.counters[counter]
        if c["CounterEventSource"] == 0:
            return 0  # CounterIdle
        if c["CounterTriggerSource"] != 0:
            return 1  # CounterTriggerWait: this fake does not model counter start triggers
        return 3 if c["CounterValue"] >= c["CounterDuration"] else 2

    def _count(self, source: str, edges: tuple[str, ...] | None = None) -> None:
        """Counters whose event source is `source` count: a signal (`edges` given) once per edge
        matching CounterEventActivation, an internal event (ExposureStart, ...) once."""
        node = self.nodemap.GetNode("CounterEventSource")
        if node is None:
            return
        for name, c in self.counters.items():
            symbol = node.entries[c["CounterEventSource"]].symbolic
            activation = ("LevelLow", "LevelHigh", "FallingEdge", "RisingEdge", "AnyEdge")[c["CounterEventActivation"]]
            if symbol == source and self.counter_status(name) == 2:
                c["CounterValue"] += 1 if edges is None else sum(1 for e in edges if activation in (e, "AnyEdge"))

    def _exposure_started(self) -> None:
        self.exposures += 1
        self._count("ExposureStart")

    # behaviour ---------------------------------------------------------------------------
    def _trigger(self) -> None:
        self.pending_triggers += 1

    def pulse(self, line: str | None = None, at: float | None = None) -> bool:
        """A hardware pulse (rising then falling edge) on `line` (default: the configured trigger
        line) at sensor time `at` (seconds, default now). True when it started an exposure."""
        now = time.monotonic() if at is None else at
        if line is None:
            source = self._v("TriggerSource")
            line = source if source.startswith("Line") else "Line0"
        self._count(line, ("RisingEdge", "FallingEdge"))
        if not (self._v("TriggerMode") == "On" and self._v("TriggerSource") == line):
            return False
        self.fake_edges += 1
        if not self.streaming or now < self.busy_until:
            self.fake_missed += 1
            return False
        self.busy_until = now + (self._v("ExposureTime") + self.readout_us) / 1e6
        self._exposure_started()
        self.pending_triggers += 1
        return True

    def lose(self) -> None:
        self.connected = False
        self.generation += 1
        self.initialized = self.streaming = False
        self.pool, self.out = [], set()

    def _enumerable(self) -> bool:
        if self.connected:
            return True
        if self.absent_for > 0:
            self.absent_for -= 1
            return False
        self.connected = True  # plugged back in
        return True

    def begin(self) -> None:
        n = self._v("StreamBufferCountManual") if self._v("StreamBufferCountMode") == "Manual" else 10
        w, h = self._v("Width"), self._v("Height")
        shape = (h, w, 3) if self._v("PixelFormat") in ("RGB8", "BGR8") else (h, w)
        self.pool = [np.zeros(shape, np.uint8) for _ in range(n)]
        self.out = set()
        self.streaming = True
        self.delivered_this_acq = 0

    def frame_available(self) -> bool:
        if self.stall > 0:
            self.stall -= 1
            return False
        if self._v("AcquisitionMode") == "SingleFrame" and self.delivered_this_acq >= 1:
            return False
        if self._v("TriggerMode") == "On":
            if self.pending_triggers == 0:
                return False
            self.pending_triggers -= 1
        if len(self.out) >= len(self.pool):
            # The camera made the frame but no host buffer was free: the stream loses it.
            self.starved += 1
            self.stream_lost += 1
            self.frame_id += 1
            if not self._hardware_triggered():
                self._exposure_started()
            return False
        return True

    def _hardware_triggered(self) -> bool:
        return self._v("TriggerMode") == "On" and self._v("TriggerSource").startswith("Line")

    def fill(self) -> tuple[int, bool]:
        free = next(i for i in range(len(self.pool)) if i not in self.out)
        if not self._hardware_triggered():  # a triggered frame's exposure started at the pulse
            self._exposure_started()
        self.frame_id += 1
        self.frames_made += 1
        self.delivered_this_acq += 1
        buf = self.pool[free]
        h, w = buf.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        pattern = ((xx + 2 * yy + 7 * self.frame_id) % 251).astype(np.uint8)
        buf[...] = pattern[..., None] if buf.ndim == 3 else pattern
        self.out.add(free)
        return free, self.frame_id in self.incomplete_ids


class Image:
    """ImagePtr as returned by GetNextImage. Valid until Release()."""

    def __init__(self, device: FakeDevice, slot: int, frame_id: int, incomplete: bool, pixel_format: str) -> None:
        self._device, self._slot, self._frame_id = device, slot, frame_id
        self._incomplete, self._pixel_format = incomplete, pixel_format
        self._generation = device.generation
        self._released = False

    def _check(self) -> None:
        if self._released:
            raise SpinnakerException("Image has been released", SPINNAKER_ERR_ERROR)

    def IsIncomplete(self) -> bool:
        self._check()
        return self._incomplete

    def GetImageStatus(self) -> int:
        self._check()
        return SPINNAKER_IMAGE_STATUS_MISSING_PACKETS if self._incomplete else SPINNAKER_IMAGE_STATUS_NO_ERROR

    def GetNDArray(self) -> np.ndarray:
        self._check()
        view = self._device.pool[self._slot].view()
        view.flags.writeable = False
        return view

    def GetWidth(self) -> int:
        return int(self._device.pool[self._slot].shape[1])

    def GetHeight(self) -> int:
        return int(self._device.pool[self._slot].shape[0])

    def GetPixelFormatName(self) -> str:
        return self._pixel_format

    def GetFrameID(self) -> int:
        return self._frame_id

    def GetTimeStamp(self) -> int:
        return self._frame_id * 33_333_333  # device clock, ns

    def Release(self) -> None:
        if self._released:
            raise SpinnakerException("Image has already been released", SPINNAKER_ERR_ERROR)
        self._released = True
        dev = self._device
        if dev.generation == self._generation and self._slot in dev.out:
            dev.out.discard(self._slot)
            dev.pool[self._slot][...] = 0xAB  # the driver reuses the buffer


class CameraPtr:
    def __init__(self, device: FakeDevice | None) -> None:
        self._device = device
        self._generation = device.generation if device else -1
        _camera_refs.add(self)

    def _dev(self, *, need_init: bool = False) -> FakeDevice:
        d = self._device
        if d is None or not self.IsValid():
            raise SpinnakerException("Camera is not valid (device removed)", SPINNAKER_ERR_IO)
        if need_init and not d.initialized:
            raise SpinnakerException("Camera is not initialized", SPINNAKER_ERR_NOT_INITIALIZED)
        return d

    def IsValid(self) -> bool:
        d = self._device
        return d is not None and d.connected and d.generation == self._generation

    def IsInitialized(self) -> bool:
        return self.IsValid() and self._device.initialized

    def IsStreaming(self) -> bool:
        return self.IsValid() and self._device.streaming

    def Init(self) -> None:
        d = self._dev()
        d.initialized = True
        fake_calls.append(("Init", d.serial))

    def DeInit(self) -> None:
        d = self._dev()
        if d.streaming:
            raise SpinnakerException("Camera is streaming; call EndAcquisition first", SPINNAKER_ERR_RESOURCE_IN_USE)
        d.initialized = False
        fake_calls.append(("DeInit", d.serial))

    def GetNodeMap(self) -> INodeMap:
        return self._dev(need_init=True).nodemap

    def GetTLDeviceNodeMap(self) -> INodeMap:
        return self._dev().tl_nodemap

    def GetTLStreamNodeMap(self) -> INodeMap:
        return self._dev().stream_nodemap

    def GetUniqueID(self) -> str:
        return self._dev().serial

    def BeginAcquisition(self) -> None:
        d = self._dev(need_init=True)
        if d.streaming:
            raise SpinnakerException("Camera is already streaming", SPINNAKER_ERR_RESOURCE_IN_USE)
        d.begin()
        fake_calls.append(("BeginAcquisition", d.serial))

    def EndAcquisition(self) -> None:
        d = self._dev(need_init=True)
        if not d.streaming:
            raise SpinnakerException("Camera is not started", SPINNAKER_ERR_NOT_INITIALIZED)
        d.leaked_at_end += len(d.out)
        d.streaming = False
        fake_calls.append(("EndAcquisition", d.serial))

    def GetNextImage(self, grabTimeout: int = EVENT_TIMEOUT_INFINITE, streamIndex: int = 0) -> Image:
        d = self._device
        if d is not None and d.generation != self._generation:
            raise SpinnakerException("Stream has been aborted", SPINNAKER_ERR_ABORT)
        d = self._dev(need_init=True)
        if not d.streaming:
            raise SpinnakerException("Camera is not started", SPINNAKER_ERR_NOT_INITIALIZED)
        if d.lose_after is not None and d.frames_made >= d.lose_after:
            d.lose_after = None
            d.lose()
            raise SpinnakerException("Stream has been aborted", SPINNAKER_ERR_ABORT)
        if not d.frame_available():
            if grabTimeout == EVENT_TIMEOUT_INFINITE:
                raise RuntimeError("fake PySpin: GetNextImage with an infinite timeout would hang here")
            time.sleep(grabTimeout / 1000.0)
            raise SpinnakerException("Failed waiting for EventData on NEW_BUFFER_DATA event.", SPINNAKER_ERR_TIMEOUT)
        slot, incomplete = d.fill()
        return Image(d, slot, d.frame_id, incomplete, d.value("PixelFormat"))


class CameraList:
    def __init__(self, cams: list[CameraPtr]) -> None:
        self._cams = cams

    def GetSize(self) -> int:
        return len(self._cams)

    def __len__(self) -> int:
        return len(self._cams)

    def GetByIndex(self, index: int) -> CameraPtr:
        if not 0 <= index < len(self._cams):
            raise SpinnakerException(f"Index {index} out of range", SPINNAKER_ERR_INVALID_PARAMETER)
        return CameraPtr(self._cams[index]._device)

    def __getitem__(self, index: int) -> CameraPtr:
        return self.GetByIndex(index)

    def __iter__(self):
        return iter([self.GetByIndex(i) for i in range(len(self._cams))])

    def GetBySerial(self, serial: str) -> CameraPtr:
        for c in self._cams:
            if c._device is not None and c._device.serial == serial:
                return CameraPtr(c._device)
        return CameraPtr(None)  # a null CameraPtr: IsValid() is False

    def Clear(self) -> None:
        self._cams = []
        fake_calls.append(("CameraList.Clear",))


class LibraryVersion:
    major, minor, type, build = 4, 0, 0, 116


class System:
    def __init__(self) -> None:
        self._refs = 0

    @staticmethod
    def GetInstance() -> System:
        global _system
        if _system is None:
            _system = System()
        _system._refs += 1
        fake_calls.append(("GetInstance",))
        return _system

    def GetLibraryVersion(self) -> LibraryVersion:
        return LibraryVersion()

    def GetCameras(self, updateInterfaces: bool = True, updateCameras: bool = True) -> CameraList:
        self._check()
        return CameraList([CameraPtr(d) for d in _devices.values() if d._enumerable()])

    def UpdateCameras(self, updateInterfaces: bool = True) -> bool:
        return True

    def IsInUse(self) -> bool:
        return fake_live_camera_refs() > 0

    def _check(self) -> None:
        if self._refs <= 0:
            raise SpinnakerException("System instance has been released", SPINNAKER_ERR_NOT_INITIALIZED)

    def ReleaseInstance(self) -> None:
        self._check()
        live = fake_live_camera_refs()
        if live:
            raise SpinnakerException(
                f"Can't clear a camera because something still holds a reference to the camera ({live} alive)",
                SPINNAKER_ERR_RESOURCE_IN_USE,
            )
        self._refs -= 1
        fake_calls.append(("ReleaseInstance",))
