"""gentl://PATH.cti?serial=S (or gentl://?serial=S with GENICAM_GENTL64_PATH) via harvesters.

Life cycle as the harvesters tutorial: Harvester().add_file(cti) -> update() -> create(...)
-> configure the remote device's node map -> start() -> `with fetch(timeout) as buffer:`
(copy the data before the buffer is queued back) ... -> stop() -> destroy() -> reset().

Any GenICam camera works through its vendor's producer; features the camera lacks are
skipped (debug log), but a feature the user asked for that is missing is warned about.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.deps import require
from edge_runtime.errors import SourceError, first_line
from edge_runtime.frames import Frame
from edge_runtime.sources.base import Held, SourceBase, quietly, retry_with_backoff
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.trigger_counters import GenApiNodes, TriggerCounters
from edge_runtime.sources.uri import SourceUri

log = logging.getLogger(__name__)

HARVESTERS_HINT = "install it with: pip install harvesters genicam (plus your camera vendor's GenTL producer .cti)"



def find_producers(target: str, env: dict[str, str] | None = None) -> list[Path]:
    """The .cti file named in the URI, or every .cti in GENICAM_GENTL64_PATH's folders."""
    if target:
        p = Path(target).expanduser()
        if p.suffix.lower() != ".cti":
            raise SourceError(f"gentl:// needs a GenTL producer file ending in .cti, got {target!r}")
        if not p.is_file():
            raise SourceError(f"GenTL producer not found: {p}")
        return [p]
    env = dict(os.environ) if env is None else env
    paths = [Path(d) for d in env.get("GENICAM_GENTL64_PATH", "").split(os.pathsep) if d]
    found = sorted(f for d in paths if d.is_dir() for f in d.glob("*.cti"))
    if not found:
        raise SourceError("gentl:// without a .cti path needs GENICAM_GENTL64_PATH to name a folder holding a GenTL producer (.cti)")
    return found


def simulator_producer() -> Path | None:
    """The GenTL camera simulator (viky.cti) shipped in the `genicam` wheel, when both it and
    harvesters are installed: the demo and the tests acquire from it for real."""
    try:
        import genicam
        import harvesters.core  # noqa: F401
    except ImportError:
        return None
    found = sorted(Path(genicam.__file__).parent.rglob("*.cti"))
    return found[0] if found else None


class GenTLSource(SourceBase):
    """Any GenICam camera through harvesters and its vendor's GenTL producer (.cti).

    Args:
        parsed: `gentl://PATH.cti` or `gentl://` (producers from GENICAM_GENTL64_PATH).
        options: every option but loop and max_pixels is applied to the camera.
        params: the URI's own keys: `serial` (the first device when absent).
    """

    stat_keys = ("incomplete", "device_lost", "missing_features", "camera_skipped", "bad_frame")
    applies = frozenset(SourceOptions.__dataclass_fields__) - {"loop", "max_pixels"}

    def __init__(self, parsed: SourceUri, options: SourceOptions, params: dict[str, str]) -> None:
        super().__init__(parsed.raw, options)
        self.target = parsed.target
        self.serial = params.get("serial", "")
        self.camera_serial = self.serial
        self.settings: dict[str, Any] = {}
        self._h: Any = None
        self._ia: Any = None
        self._timeout_exc: type[BaseException] = TimeoutError
        self._gentl_exc: tuple[type[BaseException], ...] = ()
        self._last_device_id: int | None = None
        self._counters = TriggerCounters(self.uri, options.trigger, options.trigger_counters)

    def _open(self) -> None:
        producers = find_producers(self.target)
        core = require("harvesters.core", purpose="gentl:// sources", hint=HARVESTERS_HINT)
        gentl = require("genicam.gentl", purpose="gentl:// sources", hint=HARVESTERS_HINT)
        self._timeout_exc = gentl.TimeoutException
        self._gentl_exc = (gentl.GenericException,)
        self._h = core.Harvester()
        try:
            for cti in producers:
                self._h.add_file(str(cti))
            self._connect()
        except BaseException:
            self._close()
            raise
        log.info("%s: acquiring from %s with %s", self.uri, self.camera_serial, self.settings)

    OWN_KEYS = ("serial",)  # gentl://...?serial=S
    # What release_held frees if the source is dropped without close().
    _ia = Held()
    _h = Held()

    @staticmethod
    def release_held(uri: str, held: dict[str, Any]) -> None:
        """Finalizer, as harvesters tears down: ImageAcquirer stop and destroy, then Harvester reset.

        Args:
            uri: the source's URI, for messages.
            held: `_ia` and `_h` as the source left them.
        """
        ia = held.pop("_ia", None)
        if ia is not None:
            quietly(uri, "ImageAcquirer.stop", ia.stop)
            quietly(uri, "ImageAcquirer.destroy", ia.destroy)
        harvester = held.pop("_h", None)
        if harvester is not None:
            quietly(uri, "Harvester.reset", harvester.reset)

    def _connect(self) -> None:
        self._h.update()
        infos = list(self._h.device_info_list)
        if not infos:
            raise SourceError(f"{self.uri}: no GenICam device found by the producer(s)")
        serials = [str(i.serial_number) for i in infos]
        if self.serial:
            if self.serial not in serials:
                raise SourceError(f"{self.uri}: no device with serial {self.serial} (found: {', '.join(serials)})")
            self._ia = self._h.create({"serial_number": self.serial})
            self.camera_serial = self.serial
        else:
            self._ia = self._h.create(0)
            self.camera_serial = serials[0]
        try:
            self._configure()
        except self._gentl_exc as exc:
            raise SourceError(f"{self.uri}: cannot configure camera: {first_line(exc)}") from None
        self._ia.start()
        self._last_device_id = None  # a (re)started stream numbers its frames afresh

    # -- configuration -------------------------------------------------------------------
    def _feature(self, node_map: Any, name: str, requested: bool) -> Any:
        try:
            node = getattr(node_map, name)
        except Exception:  # harvesters raises AttributeError or a GenICam LogicalError
            node = None
        if node is None:
            if requested:
                self.count("missing_features")
                log.warning("%s: camera has no feature %s; the requested setting is NOT applied", self.uri, name)
            else:
                log.debug("%s: camera has no feature %s; left as is", self.uri, name)
        return node

    def _set(self, node_map: Any, name: str, value: Any, requested: bool = True) -> bool:
        node = self._feature(node_map, name, requested)
        if node is None:
            return False
        try:
            if node.value == value:  # some nodes are read-only yet already right
                self.settings[name] = value
                return True
        except Exception:  # write-only or unreadable node: just write it
            pass
        try:
            node.value = value
        except Exception as exc:
            symbolics = getattr(node, "symbolics", None)
            allowed = f" (allowed: {', '.join(map(str, symbolics))})" if symbolics else ""
            raise SourceError(f"{self.uri}: cannot set {name}={value!r}: {first_line(exc)}{allowed}") from None
        self.settings[name] = value
        return True

    def _configure(self) -> None:
        o = self.options
        nm = self._ia.remote_device.node_map
        self._set(nm, "AcquisitionMode", "Continuous", requested=False)
        self._set(nm, "TriggerMode", "Off", requested=o.trigger != "off")
        if o.trigger != "off":
            self._set(nm, "TriggerSelector", "FrameStart", requested=False)
            self._set(nm, "TriggerSource", "Software" if o.trigger == "software" else o.trigger_line)
            if o.trigger == "hardware":
                self._set(nm, "TriggerActivation", o.trigger_edge)
            self._set(nm, "TriggerMode", "On")
        if o.exposure_us is not None:
            self._set(nm, "ExposureAuto", "Off", requested=False)
            self._set(nm, "ExposureTime", float(o.exposure_us))
        if o.gain_db is not None:
            self._set(nm, "GainAuto", "Off", requested=False)
            self._set(nm, "Gain", float(o.gain_db))
        if o.pixel_format:
            self._set(nm, "PixelFormat", o.pixel_format)
        for name in ("BinningHorizontal", "BinningVertical", "DecimationHorizontal", "DecimationVertical"):
            value = getattr(o, name.replace("Horizontal", "_horizontal").replace("Vertical", "_vertical").lower())
            if value is not None:
                self._set(nm, name, int(value))
        if o.roi is not None:
            x, y, w, h = o.roi
            self._set(nm, "OffsetX", 0, requested=x != 0)
            self._set(nm, "OffsetY", 0, requested=y != 0)
            self._set(nm, "Width", int(w))
            self._set(nm, "Height", int(h))
            if x:
                self._set(nm, "OffsetX", int(x))
            if y:
                self._set(nm, "OffsetY", int(y))
        if o.fps is not None:
            self._set(nm, "AcquisitionFrameRateEnable", True, requested=False)
            self._set(nm, "AcquisitionFrameRate", float(o.fps))
        streams = getattr(self._ia, "data_streams", None) or []
        if streams:
            self._set(streams[0].node_map, "StreamBufferHandlingMode", o.buffer_handling)
        self._ia.num_buffers = max(int(o.buffer_count), int(getattr(self._ia, "min_num_buffers", 1) or 1))
        self.settings["num_buffers"] = self._ia.num_buffers
        if o.trigger == "hardware":
            self._counters.arm(GenApiNodes(nm), o.trigger_line, o.trigger_edge, self._frames_seen())

    # -- acquisition ---------------------------------------------------------------------
    def _grab(self) -> Frame | None:
        if self._ia is None:
            self._reconnect()
            return None
        if self._counters.due():
            self._sample_counters()
        lost = ""
        try:
            if self.options.trigger == "software":
                self._ia.remote_device.node_map.TriggerSoftware.execute()
            with self._ia.fetch(timeout=self.options.timeout_s) as buffer:
                received_ns = time.monotonic_ns()
                return self._take(buffer, received_ns)
        except self._timeout_exc:
            self.count("timeouts")
            if self._acquiring():
                return None
            lost = "acquisition stopped under us"
        except self._gentl_exc as exc:
            lost = first_line(exc)
        self._lost(lost)
        return None

    def _acquiring(self) -> bool:
        check = getattr(self._ia, "is_acquiring", None)
        try:
            return bool(check()) if check is not None else True
        except Exception:
            return False

    def _take(self, buffer: Any, received_ns: int) -> Frame | None:
        meta: dict[str, Any] = {}
        for key, attr in (("device_frame_id", "frame_id"), ("device_timestamp_ns", "timestamp_ns")):
            try:
                meta[key] = int(getattr(buffer, attr))
            except Exception:  # producers may not support timestamps (NotAvailableException)
                meta[key] = None
        self._note_device_id(meta["device_frame_id"])
        module = buffer.module
        if hasattr(module, "is_complete") and not module.is_complete():
            self.reject("incomplete", f"camera frame {meta['device_frame_id']} incomplete", received_ns, device_frame_id=meta["device_frame_id"])
            return None
        try:
            component = buffer.payload.components[0]
            w, h = int(component.width), int(component.height)
            n = int(component.num_components_per_pixel)
            data = component.data
            shape = (h, w) if n == 1 else (h, w, n)
            # The buffer goes back to the producer when the `with` block ends: copy now.
            image = np.array(data[: w * h * n].reshape(shape), copy=True)
            data_format = str(component.data_format)
        except Exception as exc:  # a short/odd payload spoils this buffer, not the camera
            self.reject("bad_frame", f"camera frame {meta['device_frame_id']} unusable payload: {first_line(exc)}", received_ns, device_frame_id=meta["device_frame_id"])
            return None
        return self.make_frame(image, data_format, received_ns, timestamp_domain="host_monotonic", **meta)

    def _note_device_id(self, device_id: int | None) -> None:
        """Count frames the camera or transport dropped before we saw them (id gaps)."""
        if device_id is None:
            return
        last = self._last_device_id
        if last is not None and device_id > last + 1:
            self.count("camera_skipped", device_id - last - 1)
        self._last_device_id = device_id

    # -- camera counters ----------------------------------------------------------------
    def _frames_seen(self) -> int:
        return sum(self._counts[k] for k in ("delivered", "incomplete", "bad_frame"))

    def _sample_counters(self) -> None:
        """Trigger counters and the data stream's lost/dropped frame counts (register reads:
        every interval_s, at status time while capture is idle, and at close)."""
        try:
            self._counters.sample(GenApiNodes(self._ia.remote_device.node_map), self._frames_seen())
            streams = getattr(self._ia, "data_streams", None) or []
            if streams:
                self._counters.sample_stream(GenApiNodes(streams[0].node_map))
        except Exception as exc:  # a device going away: the next fetch handles it
            log.debug("%s: camera counters not read: %s", self.uri, first_line(exc))

    def stats(self) -> dict[str, Any]:
        """Counters plus the camera's: `trigger_edges`, `missed_triggers`,
        `missed_triggers_source`, `stream_lost`, `stream_dropped` (None when not counted)."""
        if self._lock.acquire(blocking=False):  # never wait on a grab in progress
            try:
                if self._ia is not None and self._opened:
                    self._sample_counters()
            finally:
                self._lock.release()
        return {**super().stats(), **self._counters.stats()}

    def _lost(self, why: str) -> None:
        self.count("device_lost")
        log.warning("%s: device %s lost: %s", self.uri, self.camera_serial, why)
        self._teardown_acquirer()
        self._reconnect()

    def _reconnect(self) -> None:
        def attempt() -> None:
            try:
                self._connect()
            except BaseException:
                self._teardown_acquirer()
                raise

        retry_with_backoff(self.uri, self.options, attempt, lambda: self._closed)
        if self._ia is not None:
            self.count("reconnects")

    def _teardown_acquirer(self) -> None:
        if self._ia is None:
            self._counters.end_session()
            return
        if self._acquiring():  # last readings and the counters' settings back while it answers
            self._sample_counters()
            try:
                self._counters.restore(GenApiNodes(self._ia.remote_device.node_map))
            except Exception as exc:
                log.warning("%s: cannot restore counter settings: %s", self.uri, first_line(exc))
        self._counters.end_session()
        for step in ("stop", "destroy"):
            try:
                getattr(self._ia, step)()
            except Exception as exc:
                log.warning("%s: ImageAcquirer.%s failed: %s", self.uri, step, first_line(exc))
        self._ia = None

    def _close(self) -> None:
        self._teardown_acquirer()
        if self._h is not None:
            try:
                self._h.reset()
            except Exception as exc:
                log.warning("%s: Harvester.reset failed: %s", self.uri, first_line(exc))
            self._h = None
