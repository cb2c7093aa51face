"""From model outputs to a verdict: score vs threshold -> OK/NG, and heatmaps for NG frames.

Heatmaps are JPEG overlays of the upsampled patch map on the (ROI-cropped, RGB) frame, written
to a folder that never holds more than `max_files` of them: the oldest is deleted first, so a
line that produces many NG frames cannot fill the device's disk.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, DataError
from edge_runtime.frames import Frame
from edge_runtime.input_alarm import StationMonitor
from edge_runtime.preprocess import Roi, crop_roi, to_rgb, upsample_map
from edge_runtime.verdict import decide, make_verdict

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class HeatmapOptions:
    """The `heatmaps:` config section: where overlays go, how many are kept, and how they look.

    Raises:
        ConfigError: a value out of range (max_files < 1, alpha outside [0, 1], ...).
    """

    dir: Path | None = None  # None = no heatmaps
    max_files: int = 500
    only_ng: bool = True
    alpha: float = 0.5  # weight of the colour map in the overlay
    sigma: float = 0.0  # Gaussian smoothing of the upsampled map, in output pixels
    max_side: int = 768  # overlays are downscaled to this (full-res JPEGs cost tens of ms)
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        if self.max_files < 1:
            raise ConfigError(f"heatmaps.max_files must be >= 1, got {self.max_files}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"heatmaps.alpha must be in [0, 1], got {self.alpha}")
        if self.max_side < 16:
            raise ConfigError(f"heatmaps.max_side must be >= 16, got {self.max_side}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"heatmaps.jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.sigma < 0:
            raise ConfigError(f"heatmaps.sigma must be >= 0, got {self.sigma}")


def overlay(rgb: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5, sigma: float = 0.0) -> np.ndarray:
    """BGR uint8 image: JET colour map of `anomaly_map` ([h,w] in [0,1]) blended over `rgb`."""
    import cv2

    h, w = rgb.shape[:2]
    up = upsample_map(anomaly_map, (h, w), sigma=sigma)
    heat = cv2.applyColorMap(np.clip(up * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(heat, alpha, np.ascontiguousarray(rgb[:, :, ::-1]), 1.0 - alpha, 0.0)


class HeatmapWriter:
    """Writes overlays into `dir`, keeping at most `max_files` (oldest deleted first).

    Existing heatmaps from earlier runs count towards the limit, so restarts stay bounded.
    """

    SUFFIX = ".jpg"

    def __init__(self, options: HeatmapOptions) -> None:
        if options.dir is None:
            raise ConfigError("heatmaps.dir is not set")
        self.options = options
        self.dir = Path(options.dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"heatmaps.dir {self.dir} cannot be created: {exc.strerror}") from None
        existing = sorted(
            (p for p in self.dir.glob(f"*{self.SUFFIX}") if p.is_file()), key=lambda p: (p.stat().st_mtime_ns, p.name)
        )
        self._files: deque[Path] = deque(existing)
        self._lock = threading.Lock()
        self.written = 0
        self.deleted = 0
        self._trim()

    def _trim(self) -> None:
        while len(self._files) > self.options.max_files:
            old = self._files.popleft()
            try:
                old.unlink()
                self.deleted += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot delete old heatmap %s: %s", old, exc)

    def write(self, rgb: np.ndarray, anomaly_map: np.ndarray, name: str) -> Path:
        """Write one overlay as `<name>.jpg` (atomically) and delete the oldest beyond `max_files`.

        Args:
            rgb: the (ROI-cropped) frame, HxWx3 RGB; downscaled to `max_side` first.
            anomaly_map: the patch-grid map [h, w] in [0, 1].
            name: file stem; characters unsafe in file names become "_".

        Returns:
            The written file's path.

        Raises:
            DataError: JPEG encoding failed.
            OSError: the file cannot be written (the postprocessor counts it and goes on).
        """
        import cv2

        h, w = rgb.shape[:2]
        scale = min(1.0, self.options.max_side / max(h, w))
        if scale < 1.0:
            rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        img = overlay(rgb, anomaly_map, self.options.alpha, self.options.sigma)
        ok, buf = cv2.imencode(self.SUFFIX, img, [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality])
        if not ok:
            raise DataError(f"cannot encode heatmap {name}")
        path = self.dir / (_SAFE.sub("_", name) + self.SUFFIX)
        tmp = path.with_name("." + path.name + ".tmp")
        # Write then rename: a reader (or a crash) never sees half a JPEG.
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
        with self._lock:
            if path in self._files:
                self._files.remove(path)
            self._files.append(path)
            self.written += 1
            self._trim()
        return path


class Postprocessor:
    """Builds the verdict for one frame and, when configured, its heatmap.

    Called in the inference thread for every scored frame; it also feeds the station
    monitor (input alarm, rolling OK-score mean) whose fields the status record carries.

    Args:
        bundle: the loaded bundle (threshold, identity, input profile).
        backend_info: the backend's `describe()` (its "backend" and "precision" go into verdicts).
        threshold: overrides the bundle's threshold (recorded as "override").
        heatmaps: heatmap options; None or no `dir` writes none.
        roi: the crop the frame went through, so heatmaps and input statistics see the same pixels.

    Raises:
        ConfigError: the heatmap folder cannot be created.
        BundleError: the bundle's input profile cannot be read.
    """

    def __init__(
        self,
        bundle: Any,
        backend_info: Mapping[str, Any],
        *,
        threshold: float | None = None,
        heatmaps: HeatmapOptions | None = None,
        roi: Roi | None = None,
    ) -> None:
        self.threshold = float(bundle.manifest.threshold.value if threshold is None else threshold)
        self.threshold_source = "override" if threshold is not None else bundle.manifest.threshold.method
        self.bundle_sha256 = bundle.manifest_sha256
        self.model_id = bundle.manifest.model_id
        self.backend = str(backend_info.get("backend", "?"))
        self.precision = str(backend_info.get("precision", "?"))
        self.roi = roi
        self.heatmaps = HeatmapWriter(heatmaps) if heatmaps is not None and heatmaps.dir is not None else None
        self.ng = 0
        self.ok = 0
        self.errors = 0  # NaN/Inf/out-of-range scores: ERROR records, never OK/NG
        self.heatmap_errors = 0
        self.monitor = StationMonitor.for_bundle(bundle)  # input alarm + rolling OK-score mean (status topic)

    def wants_heatmap(self, score: float) -> bool:
        """Whether this score gets a heatmap: heatmaps configured, a judgeable score, and NG unless `only_ng` is off."""
        if self.heatmaps is None:
            return False
        verdict = decide(score, self.threshold)
        if verdict == "ERROR":  # a NaN/out-of-range score has no meaningful map
            return False
        return (not self.heatmaps.options.only_ng) or verdict == "NG"

    def heatmap_for(self, frame: Frame, anomaly_map: np.ndarray) -> Path:
        """Write the heatmap of `frame` (ROI-cropped, as RGB) named `<camera serial>_<frame id>`; only when `wants_heatmap`."""
        assert self.heatmaps is not None
        fmt = str(frame.meta.get("pixel_format", "RGB8")) if frame.meta else "RGB8"
        rgb = to_rgb(crop_roi(frame.image, self.roi), fmt)
        return self.heatmaps.write(rgb, anomaly_map, f"{frame.camera_serial}_{frame.frame_id:09d}")

    def __call__(
        self, frame: Frame, score: float, anomaly_map: np.ndarray, latency_ms: Mapping[str, float]
    ) -> dict[str, Any]:
        """The verdict of one scored frame (`make_verdict` plus `input_alarm`); a heatmap that cannot be written is counted, never raised."""
        score = float(score)
        heatmap = None
        if self.wants_heatmap(score):
            try:
                heatmap = str(self.heatmap_for(frame, anomaly_map))
            except OSError as exc:
                # A full or read-only disk must not stop the line: the verdict still goes out.
                self.heatmap_errors += 1
                if self.heatmap_errors == 1 or self.heatmap_errors % 100 == 0:
                    log.warning("cannot write heatmap (%d failures so far): %s", self.heatmap_errors, exc)
        fmt = str(frame.meta.get("pixel_format", "RGB8")) if frame.meta else "RGB8"
        input_alarm = self.monitor.observe_frame(crop_roi(frame.image, self.roi), fmt)
        verdict = make_verdict(
            frame_id=frame.frame_id,
            camera_serial=frame.camera_serial,
            capture_ts_ns=frame.timestamp_ns,
            score=score,
            threshold=self.threshold,
            bundle_sha256=self.bundle_sha256,
            model_id=self.model_id,
            backend=self.backend,
            precision=self.precision,
            latency_ms=latency_ms,
            heatmap=heatmap,
        )
        verdict["input_alarm"] = input_alarm
        self.monitor.observe_verdict(verdict)
        if verdict["verdict"] == "NG":
            self.ng += 1
        elif verdict["verdict"] == "OK":
            self.ok += 1
        else:
            self.errors += 1
        return verdict
