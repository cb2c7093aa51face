"""Heatmap overlays for eval: the anomaly map in the jet colormap over the image, with the
ground-truth mask outlined, next to the plain image.

Maps are drawn on an absolute scale (probability 0 -> blue, 1 -> red), not min-max scaled
per image, so a normal image looks calm and overlays of different images compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.errors import DataError

MIN_DISPLAY = 256  # tiny test models see 64 px; enlarge overlays so a person can read them
CONTOUR_RGB = (255, 255, 255)


def colorize(amap: np.ndarray) -> np.ndarray:
    """[H,W] values in [0,1] -> HxWx3 uint8 RGB in the jet colormap."""
    import cv2

    v = np.clip(np.nan_to_num(amap.astype(np.float32), nan=0.0), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.rint(v * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def overlay(image: np.ndarray, amap: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend the colorized map over an RGB uint8 image (same H,W) and outline `mask`."""
    import cv2

    if image.shape[:2] != amap.shape:
        raise DataError(f"overlay: image {image.shape[:2]} and map {amap.shape} differ in size")
    out = cv2.addWeighted(image, 1.0 - alpha, colorize(amap), alpha, 0.0)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, CONTOUR_RGB, thickness=max(1, image.shape[0] // 256))
    return out


def heatmap_panel(
    image: np.ndarray,
    amap: np.ndarray,
    mask: np.ndarray | None,
    caption: str = "",
    min_display: int = MIN_DISPLAY,
) -> np.ndarray:
    """[image | overlay] side by side, enlarged to at least `min_display` px high, with a caption."""
    import cv2

    h, w = image.shape[:2]
    scale = max(1.0, min_display / h)
    size = (int(round(w * scale)), int(round(h * scale)))
    if scale > 1:
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        amap = cv2.resize(amap.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        mask = None if mask is None else cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    panel = np.concatenate([image, overlay(image, amap, mask)], axis=1)
    if caption:
        bar = np.zeros((24, panel.shape[1], 3), np.uint8)
        cv2.putText(bar, caption, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        panel = np.concatenate([bar, panel], axis=0)
    return np.ascontiguousarray(panel)


def save_rgb_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise DataError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())
