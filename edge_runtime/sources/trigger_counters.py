"""Missed hardware triggers, counted by the camera itself (GenICam Counter and Timer Control).

A trigger edge the camera receives while it is still exposing or reading out the previous
frame (or while acquisition is stopped) makes no exposure, no image and no gap in the frame
id: only the camera knows. So, with a hardware trigger configured, two device counters are
set up as SFNC names them (and as the Blackfly S has them, FLIR's "Counter and Timer Control"):

- Counter0 counts edges on the trigger line (`CounterEventSource = Line0`,
  `CounterEventActivation = RisingEdge`, the trigger's own line and edge);
- Counter1 counts exposures (`CounterEventSource = ExposureStart`).

Both run free (`CounterTriggerSource = Off`, `CounterResetSource = Off`, `CounterDuration`
at its maximum), started by `CounterReset`. `edges - exposures` is the number of trigger edges
that made no exposure. FLIR's BFS event list (Error, ExposureEnd, SerialPortReceive) has no
`FrameTriggerMissed` event, so counters are the portable way.

The values are read every `interval_s` from the capture thread (each is a register read: not
per frame), when the status is built while capture is idle, and at close, before
EndAcquisition. Edges are read before exposures, so a trigger that arrives between the two
reads can only make one sample low, never high; the count kept is the largest seen, which
never goes down. Near the counters' maximum both are reset and the count carries on.

Honesty: without a hardware trigger, or on a camera that lacks (or refuses) these nodes,
`missed_triggers` is None and `missed_triggers_source` says why; never a made-up 0. A node that
cannot be set is a one-line warning and the run goes on. The counters' previous settings are
put back at close.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from edge_runtime.errors import first_line

log = logging.getLogger(__name__)

EDGES, EXPOSURES = "Counter0", "Counter1"
# missed_triggers_source values
DEVICE_COUNTERS = "device_counters"  # Counter0 (trigger edges) - Counter1 (ExposureStart)
NO_TRIGGER = "no_trigger"  # free-running camera: there are no triggers to miss
SOFTWARE_TRIGGER = "software_trigger"  # the host triggers after each image: nothing to count
UNSUPPORTED = "unsupported"  # the camera lacks (or refused) the counter nodes
NOT_COUNTING = "counters_not_counting"  # frames arrived but a counter stood still
COUNTER_FULL = "counter_full"  # a counter reached its maximum and cannot be reset
DISABLED = "disabled"  # source option trigger_counters=false (the counters serve a strobe)
STREAM_COUNTERS = {"stream_lost": "StreamLostFrameCount", "stream_dropped": "StreamDroppedFrameCount"}


class CounterNodeError(Exception):
    """A counter node is missing, not writable, or the SDK refused the access."""


class CounterNodes(Protocol):
    """The few node operations the counters need, over one SDK's node map."""

    def get(self, name: str) -> Any:
        """Current value (symbolic for enumerations); CounterNodeError when unreadable."""

    def set(self, name: str, value: Any) -> None:
        """Write a value (symbolic for enumerations); CounterNodeError when refused."""

    def maximum(self, name: str) -> int | None:
        """Largest value an integer node accepts, None when unknown."""

    def execute(self, name: str) -> bool:
        """Run a command node; False when the camera has no such command."""


class TriggerCounters:
    """Counts trigger edges and missed triggers on the camera over one or more sessions
    (a reconnect starts a new session; totals carry over).

    Args:
        where: the source URI, for log lines.
        trigger: the source's trigger option ("off", "software" or "hardware").
        enabled: the source option `trigger_counters`; False leaves the counters alone.
    """

    interval_s = 1.0

    def __init__(self, where: str, trigger: str, enabled: bool = True) -> None:
        self.where = where
        self.source = {"off": NO_TRIGGER, "software": SOFTWARE_TRIGGER}.get(trigger, UNSUPPORTED)
        if not enabled and trigger == "hardware":
            self.source = DISABLED
        self._done_edges = 0  # totals of finished sessions
        self._done_missed = 0
        self._armed = False
        self._refused = False
        self._saved: list[tuple[str, str, Any]] = []  # (counter, node, previous value) to put back
        self._base = (0, 0)  # counter values at the session's start
        self._edges = 0  # this session, since _base
        self._exposures = 0
        self._missed = 0
        self._full_at: int | None = None
        self._frames_at_arm = 0
        self._last_sample = 0.0
        self._warned_read = False
        self._stream_done: dict[str, int] = dict.fromkeys(STREAM_COUNTERS, 0)  # finished acquisitions
        self._stream_now: dict[str, int] = {}  # this acquisition
        self._stream_seen: set[str] = set()

    # -- set-up ----------------------------------------------------------------------------
    def arm(self, nodes: CounterNodes, line: str, edge: str, frames_seen: int = 0) -> bool:
        """Configure Counter0 on `line`/`edge` and Counter1 on ExposureStart, reset and start
        both. False (and a one-line warning) when the camera cannot; the run goes on."""
        if self.source in (NO_TRIGGER, SOFTWARE_TRIGGER, DISABLED, NOT_COUNTING, COUNTER_FULL) or self._refused:
            return False  # after a reconnect too: a total over part of the run would mislead
        try:
            for counter, event, activation in ((EDGES, line, edge), (EXPOSURES, "ExposureStart", None)):
                self._configure(nodes, counter, event, activation)
            self._full_at = self._capacity(nodes)
            self._base = self._read(nodes)
        except CounterNodeError as exc:
            log.warning("%s: missed triggers cannot be counted on this camera: %s", self.where, exc)
            self.restore(nodes)
            self.source, self._refused = UNSUPPORTED, True
            return False
        self._armed = True
        self._edges = self._exposures = self._missed = 0
        self._frames_at_arm = frames_seen
        self._last_sample = time.monotonic()
        self.source = DEVICE_COUNTERS
        log.info("%s: counting trigger edges on %s (Counter0) against exposures (Counter1)", self.where, line)
        return True

    def _configure(self, nodes: CounterNodes, counter: str, event: str, activation: str | None) -> None:
        nodes.set("CounterSelector", counter)
        # Free-running: no start trigger and no reset source, so every event is counted.
        for name in ("CounterTriggerSource", "CounterResetSource"):
            self._write(nodes, counter, name, "Off", required=False)
        self._write(nodes, counter, "CounterEventSource", event)
        if activation is not None:
            self._write(nodes, counter, "CounterEventActivation", activation)
        top = nodes.maximum("CounterDuration")
        if top is not None:
            self._write(nodes, counter, "CounterDuration", top, required=False)
        # SFNC: CounterReset zeroes the counter and starts it; without it the baseline is read.
        nodes.execute("CounterReset")

    def _write(self, nodes: CounterNodes, counter: str, name: str, value: Any, required: bool = True) -> None:
        """Set one node of the selected counter, remembering the old value for restore()."""
        try:
            old = nodes.get(name)
            if old != value:
                nodes.set(name, value)
                self._saved.append((counter, name, old))
        except CounterNodeError as exc:
            if required:
                raise
            log.debug("%s: %s %s left as is: %s", self.where, counter, name, exc)

    def _capacity(self, nodes: CounterNodes) -> int | None:
        """The value past which the counters are reset before they stop at their maximum."""
        tops = [t for t in (nodes.maximum("CounterValue"), nodes.maximum("CounterDuration")) if t]
        return int(min(tops) * 3 // 4) if tops else None

    def restore(self, nodes: CounterNodes) -> None:
        """Put back the counter settings found at arm() (best effort, warnings only)."""
        saved, self._saved = self._saved, []
        for counter, name, value in reversed(saved):
            try:
                nodes.set("CounterSelector", counter)
                nodes.set(name, value)
            except CounterNodeError as exc:
                log.warning("%s: cannot restore %s %s=%s: %s", self.where, counter, name, value, exc)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, nodes: CounterNodes) -> tuple[int, int]:
        # Edges first: an edge between the two reads can only lower this sample.
        nodes.set("CounterSelector", EDGES)
        edges = int(nodes.get("CounterValue"))
        nodes.set("CounterSelector", EXPOSURES)
        return edges, int(nodes.get("CounterValue"))

    def due(self) -> bool:
        """True when a periodic sample (counters and stream statistics) is due: a clock read."""
        return time.monotonic() - self._last_sample >= self.interval_s

    def sample(self, nodes: CounterNodes, frames_seen: int) -> None:
        """Read both counters and update the totals; a failed read is logged, never raised.

        Args:
            nodes: the camera's node map.
            frames_seen: images (good or not) the host received so far, to tell counters
                that do not count from a quiet line.
        """
        self._last_sample = time.monotonic()
        if not self._armed:
            return
        try:
            edges, exposures = self._read(nodes)
        except CounterNodeError as exc:
            if not self._warned_read:
                log.warning("%s: reading the trigger counters failed: %s", self.where, exc)
                self._warned_read = True
            return
        self._update(edges - self._base[0], exposures - self._base[1], frames_seen)
        if self._armed and self._full_at is not None and max(edges, exposures) >= self._full_at:
            self._rearm(nodes)

    def _update(self, edges: int, exposures: int, frames_seen: int) -> None:
        if edges < self._edges or exposures < self._exposures:
            return  # a counter went back (reset under us): keep what we had
        # With a hardware trigger every exposure follows an edge: fewer edges than exposures
        # (beyond the few the two reads can straddle) means the edge counter is not counting.
        stuck = (
            "exposure"
            if exposures == 0 and frames_seen > self._frames_at_arm
            else "edge"
            if exposures > edges + 2
            else ""
        )
        if stuck:
            log.warning(
                "%s: images arrive but the camera's %s counter stands still; missed triggers are not counted",
                self.where,
                stuck,
            )
            self._edges = self._exposures = self._missed = 0  # these readings mean nothing
            self._stop(NOT_COUNTING)
            return
        self._edges, self._exposures = edges, exposures
        self._missed = max(self._missed, edges - exposures)

    def _rearm(self, nodes: CounterNodes) -> None:
        self._fold()
        try:
            for counter in (EXPOSURES, EDGES):
                nodes.set("CounterSelector", counter)
                if not nodes.execute("CounterReset"):
                    raise CounterNodeError("no CounterReset command")
            self._base = self._read(nodes)
        except CounterNodeError as exc:
            log.warning(
                "%s: trigger counters are full and cannot be reset (%s); missed triggers no longer counted",
                self.where,
                exc,
            )
            self._stop(COUNTER_FULL)

    def _stop(self, why: str) -> None:
        self._armed = False
        self.source = why

    def _fold(self) -> None:
        self._done_edges += self._edges
        self._done_missed += self._missed
        self._edges = self._exposures = self._missed = 0

    def end_session(self) -> None:
        """Fold this session into the totals (on close or device loss; a reconnect arms anew)."""
        self._fold()
        self._armed = False
        for key in STREAM_COUNTERS:
            self._stream_done[key] += self._stream_now.pop(key, 0)

    def sample_stream(self, nodes: CounterNodes) -> None:
        """Read the transport layer's lost/dropped frame counters where the stream has them
        (they restart with each acquisition; totals carry over)."""
        for key, name in STREAM_COUNTERS.items():
            try:
                self._stream_now[key] = int(nodes.get(name))
            except CounterNodeError:
                continue
            self._stream_seen.add(key)

    def stats(self) -> dict[str, Any]:
        """`trigger_edges`, `missed_triggers` (None unless the device counters count),
        `missed_triggers_source`, `stream_lost`, `stream_dropped` (None when the stream has
        no such counter)."""
        counted = self.source == DEVICE_COUNTERS
        stream = {
            k: self._stream_done[k] + self._stream_now.get(k, 0) if k in self._stream_seen else None
            for k in STREAM_COUNTERS
        }
        return {
            "trigger_edges": self._done_edges + self._edges if counted else None,
            "missed_triggers": self._done_missed + self._missed if counted else None,
            "missed_triggers_source": self.source,
            **stream,
        }


class PySpinNodes:
    """CounterNodes over a PySpin INodeMap (camera or TL stream), in the C*Ptr style of FLIR's
    examples; SpinnakerException and missing nodes become CounterNodeError."""

    def __init__(self, ps: Any, nodemap: Any) -> None:
        self.ps, self.nodemap = ps, nodemap

    def _node(self, name: str) -> Any:
        node = self.nodemap.GetNode(name)
        if node is None or not self.ps.IsAvailable(node):
            raise CounterNodeError(f"camera has no node {name}")
        return node

    def _call(self, name: str, action: Any) -> Any:
        try:
            return action()
        except self.ps.SpinnakerException as exc:
            raise CounterNodeError(f"{name}: {first_line(exc)}") from None

    def get(self, name: str) -> Any:
        """Current value (symbolic for enumerations)."""
        ps, node = self.ps, self._node(name)
        if not ps.IsReadable(node):
            raise CounterNodeError(f"{name} is not readable")
        if node.GetPrincipalInterfaceType() == ps.intfIEnumeration:
            return self._call(name, lambda: ps.CEnumerationPtr(node).GetCurrentEntry().GetSymbolic())
        return self._call(name, lambda: ps.CIntegerPtr(node).GetValue())

    def set(self, name: str, value: Any) -> None:
        """Write `value` (an entry name for enumerations)."""
        ps, node = self.ps, self._node(name)
        if not ps.IsWritable(node):
            raise CounterNodeError(f"{name} is not writable")
        if node.GetPrincipalInterfaceType() == ps.intfIEnumeration:
            enum = ps.CEnumerationPtr(node)
            entry = enum.GetEntryByName(str(value))
            if entry is None or not ps.IsAvailable(entry) or not ps.IsReadable(entry):
                raise CounterNodeError(f"{name} cannot be {value!r} on this camera")
            self._call(name, lambda: enum.SetIntValue(entry.GetValue()))
        else:
            self._call(name, lambda: ps.CIntegerPtr(node).SetValue(int(value)))

    def maximum(self, name: str) -> int | None:
        """GetMax of an integer node, None when it is absent."""
        try:
            node = self.ps.CIntegerPtr(self._node(name))
        except CounterNodeError:
            return None
        return int(self._call(name, node.GetMax)) if self.ps.IsReadable(node) else None

    def execute(self, name: str) -> bool:
        """Execute a command node; False when absent or not executable now."""
        try:
            node = self.ps.CCommandPtr(self._node(name))
        except CounterNodeError:
            return False
        if not self.ps.IsWritable(node):
            return False
        self._call(name, node.Execute)
        return True


class GenApiNodes:
    """CounterNodes over a harvesters/genicam node map (attribute per feature, `.value`,
    `.max`, `.execute()`); any GenICam exception becomes CounterNodeError."""

    def __init__(self, node_map: Any) -> None:
        self.node_map = node_map

    def _node(self, name: str) -> Any:
        try:
            return getattr(self.node_map, name)
        except Exception:  # AttributeError or a genicam LogicalErrorException
            raise CounterNodeError(f"camera has no feature {name}") from None

    def get(self, name: str) -> Any:
        """Current value (symbolic for enumerations)."""
        node = self._node(name)
        try:
            return node.value
        except Exception as exc:  # genicam's exceptions share no importable base here
            raise CounterNodeError(f"{name}: {first_line(exc)}") from None

    def set(self, name: str, value: Any) -> None:
        """Write `value` (an entry name for enumerations)."""
        node = self._node(name)
        try:
            node.value = value
        except Exception as exc:
            raise CounterNodeError(f"cannot set {name}={value!r}: {first_line(exc)}") from None

    def maximum(self, name: str) -> int | None:
        """`.max` of an integer feature, None when absent."""
        try:
            return int(self._node(name).max)
        except Exception:
            return None

    def execute(self, name: str) -> bool:
        """Execute a command feature; False when the camera has none."""
        try:
            node = self._node(name)
        except CounterNodeError:
            return False
        try:
            node.execute()
        except Exception as exc:
            raise CounterNodeError(f"{name}: {first_line(exc)}") from None
        return True


def missed_trigger_alarm(camera: dict[str, Any], previous: int | None) -> tuple[list[str], int | None]:
    """Status alarms for the camera counters: `camera_missed_triggers` while the count grows.

    Args:
        camera: the source's stats() (the status record's `camera`).
        previous: the missed count at the last status, None at the first.

    Returns:
        The alarms to add and the count to pass as `previous` next time.
    """
    missed = camera.get("missed_triggers")
    if not isinstance(missed, int):
        return [], previous
    grew = missed > (previous or 0)
    return (["camera_missed_triggers"] if grew else []), missed
