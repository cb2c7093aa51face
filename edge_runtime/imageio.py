"""Reading image files with errors that name the file, and limits that protect the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # larger than any line camera we support; refuses decompression bombs


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB. Raises DataError naming the file."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"image file is empty: {p}")
    buf = np.fromfile(str(p), dtype=np.uint8)
    # Read the header first: refuse huge images before allocating their pixels.
    header = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if header is None:
        raise DataError(f"cannot decode image: {p}")
    if header.shape[0] * header.shape[1] * 64 > max_pixels:
        raise DataError(f"image too large ({header.shape[1] * 8}x{header.shape[0] * 8} or more px): {p}")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode image: {p}")
    return np.ascontiguousarray(img[:, :, ::-1])


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as HxW bool (any non-zero pixel is anomalous)."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise DataError(f"mask not found: {p}")
    m = cv2.imdecode(np.fromfile(str(p), dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DataError(f"cannot decode mask: {p}")
    return m > 0
