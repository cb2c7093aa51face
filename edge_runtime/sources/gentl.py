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
from edge_runtime.sources.base import Held, quietly
from edge_runtime.sources.camera import CameraSource, camera_settings
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.trigger_counters import GenApiNodes
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
        raise SourceError(
            "gentl:// without a .cti path needs GENICAM_GENTL64_PATH to name a folder holding a GenTL producer (.cti)"
        )
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


class GenTLSource(CameraSource):
    """Any GenICam camera through harvesters and its vendor's GenTL producer (.cti).

    Args:
        parsed: `gentl://PATH.cti` or `gentl://` (producers from GENICAM_GENTL64_PATH).
        options: every option but loop and max_pixels is applied to the camera.
        params: the URI's own keys: `serial` (the first device when absent).
    """

    stat_keys = ("incomplete", "device_lost", "missing_features", "camera_skipped", "bad_frame")

    def __init__(self, parsed: SourceUri, options: SourceOptions, params: dict[str, str]) -> None:
        super().__init__(parsed.raw, options, params.get("serial", ""))
        self.target = parsed.target
        self._h: Any = None
        self._ia: Any = None
        self._timeout_exc: type[BaseException] = TimeoutError
        self._gentl_exc: tuple[type[BaseException], ...] = ()

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
        """`SourceBase.release_held` for `_ia` and `_h`, as harvesters tears down:
        ImageAcquirer stop and destroy, then Harvester reset."""
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
        self._started()

    def _attempt_connect(self) -> None:
        try:
            self._connect()
        except BaseException:
            self._teardown_camera()
            raise

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
        # GenTL serves any camera: a missing node is an error only if the options asked for it.
        nm = self._ia.remote_device.node_map
        for step in camera_settings(self.options):
            self._set(nm, step.name, step.value, requested=step.need == "asked")
        streams = getattr(self._ia, "data_streams", None) or []
        if streams:
            self._set(streams[0].node_map, "StreamBufferHandlingMode", self.options.buffer_handling)
        self._ia.num_buffers = max(int(self.options.buffer_count), int(getattr(self._ia, "min_num_buffers", 1) or 1))
        self.settings["num_buffers"] = self._ia.num_buffers
        self._arm_counters()

    # -- acquisition ---------------------------------------------------------------------
    def _fetch(self) -> tuple[Frame | None, str | None]:
        try:
            if self.options.trigger == "software":
                self._ia.remote_device.node_map.TriggerSoftware.execute()
            with self._ia.fetch(timeout=self.options.timeout_s) as buffer:
                received_ns = time.monotonic_ns()
                return self._take(buffer, received_ns), None
        except self._timeout_exc:
            self.count("timeouts")
            if self._acquiring():
                return None, None
            return None, "acquisition stopped under us"
        except self._gentl_exc as exc:
            return None, first_line(exc)

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
            self.reject(
                "incomplete",
                f"camera frame {meta['device_frame_id']} incomplete",
                received_ns,
                device_frame_id=meta["device_frame_id"],
            )
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
            self.reject(
                "bad_frame",
                f"camera frame {meta['device_frame_id']} unusable payload: {first_line(exc)}",
                received_ns,
                device_frame_id=meta["device_frame_id"],
            )
            return None
        return self.make_frame(image, data_format, received_ns, timestamp_domain="host_monotonic", **meta)

    # -- hooks of CameraSource -----------------------------------------------------------
    def _connected(self) -> bool:
        return self._ia is not None

    def _device_answers(self) -> bool:
        return self._acquiring()

    def _counter_nodes(self) -> GenApiNodes:
        return GenApiNodes(self._ia.remote_device.node_map)

    def _stream_nodes(self) -> GenApiNodes | None:
        streams = getattr(self._ia, "data_streams", None) or []
        return GenApiNodes(streams[0].node_map) if streams else None

    def _release_camera(self) -> None:
        if self._ia is not None:
            quietly(self.uri, "ImageAcquirer.stop", self._ia.stop)
            quietly(self.uri, "ImageAcquirer.destroy", self._ia.destroy)
            self._ia = None

    def _close(self) -> None:
        self._teardown_camera()
        if self._h is not None:
            quietly(self.uri, "Harvester.reset", self._h.reset)
            self._h = None
