"""Reading image files with errors that name the file, and limits that protect the device.

Whatever the bytes, `read_rgb` either returns an HxWx3 uint8 RGB image or raises DataError:
decoder exceptions (cv2.error), truncated or text files, 16-bit, RGBA, CMYK, grey, and headers
that claim huge dimensions all end there. The size is read from the header (PNG, JPEG, BMP, TIFF)
before any pixel is decoded, so a decompression bomb never allocates its pixels.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edge_runtime.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Folder names that hold ground-truth masks in MVTec-style layouts, never inputs.
MASK_DIRS = frozenset({"ground_truth", "masks", "mask"})
MAX_PIXELS = 64_000_000  # larger than any line camera we support; refuses decompression bombs

# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic...).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_size(buf: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or TIFF header without decoding; None when the format
    is another or the header cannot be parsed (the decoder then has the last word)."""
    b = bytes(buf[:65536])
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24 and b[12:16] == b"IHDR":
        return struct.unpack(">II", b[16:24])
    if b[:2] == b"BM" and len(b) >= 26:
        w, h = struct.unpack("<ii", b[18:26])
        return abs(w), abs(h)
    if b[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(b)
    if b[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(b):
            if b[i] != 0xFF:
                return None
            marker = b[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", b[i + 2 : i + 4])
            if marker in _SOF:
                h, w = struct.unpack(">HH", b[i + 5 : i + 9])
                return w, h
            i += 2 + length
    return None


def _tiff_size(b: bytes) -> tuple[int, int] | None:
    """ImageWidth/ImageLength of a TIFF's first IFD (tags 256/257), if inside the first 64 KiB."""
    end = "<" if b[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(end + "I", b[4:8])
        (n,) = struct.unpack(end + "H", b[ifd : ifd + 2])
        dims: dict[int, int] = {}
        for k in range(n):
            tag, typ, _count = struct.unpack(end + "HHI", b[ifd + 2 + 12 * k : ifd + 10 + 12 * k])
            value = b[ifd + 10 + 12 * k : ifd + 14 + 12 * k]
            if tag in (256, 257):
                dims[tag] = struct.unpack(end + ("H" if typ == 3 else "I"), value[: 2 if typ == 3 else 4])[0]
        return (dims[256], dims[257]) if 256 in dims and 257 in dims else None
    except (struct.error, KeyError):
        return None


def decode_rgb(buf: bytes | np.ndarray, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to HxWx3 uint8 RGB (EXIF orientation applied, as OpenCV does).

    Args:
        buf: the encoded file's bytes.
        name: what to call the image in errors (usually its path).
        max_pixels: refuse larger images; the size is checked (from the header, or a
            1/8 decode) before the full decode, so a decompression bomb is never allocated.

    Raises:
        DataError: naming `name`, for anything that is not a usable image.
    """
    import cv2

    arr = (
        np.frombuffer(buf, dtype=np.uint8)
        if isinstance(buf, (bytes, bytearray, memoryview))
        else np.asarray(buf, dtype=np.uint8).ravel()
    )
    if arr.size == 0:
        raise DataError(f"image file is empty: {name}")
    size = header_size(arr)
    if size is not None:
        w, h = size
        if w == 0 or h == 0:
            raise DataError(f"cannot decode image (header says {w}x{h}): {name}")
        if w * h > max_pixels:
            raise DataError(f"image too large ({w}x{h} px, limit {max_pixels}): {name}")
    try:
        if size is None:
            # Unknown header: decode at 1/8 first to refuse huge images before their pixels.
            header = cv2.imdecode(arr, cv2.IMREAD_REDUCED_GRAYSCALE_8)
            if header is None:
                raise DataError(f"cannot decode image: {name}")
            if header.shape[0] * header.shape[1] * 64 > max_pixels:
                raise DataError(f"image too large ({header.shape[1] * 8}x{header.shape[0] * 8} or more px): {name}")
        img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        # OpenCV raises (rather than returning None) on some malformed headers and on its own
        # pixel limit; either way this file is not an image we can judge.
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise DataError(f"cannot decode image ({first[:120]}): {name}") from None
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.size == 0:
        raise DataError(f"cannot decode image: {name}")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise DataError(f"image too large ({img.shape[1]}x{img.shape[0]} px, limit {max_pixels}): {name}")
    return np.ascontiguousarray(img[:, :, ::-1])


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (see `decode_rgb` for `max_pixels`).

    Raises:
        DataError: naming the file when it is missing, empty, unreadable or not a usable image.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"image file is empty: {p}")
    try:
        buf = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image {p}: {exc.strerror or exc}") from None
    return decode_rgb(buf, str(p), max_pixels)


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


def find_images(folder: str | Path, *, skip_masks: bool = False, label: str = "image folder") -> list[Path]:
    """Image files under `folder` (recursively), sorted by path: the one listing that enroll,
    few-shot, the input profile and INT8 calibration share.

    Args:
        folder: the folder to search.
        skip_masks: leave out ground-truth masks (files named *_mask, folders in MASK_DIRS).
        label: what the folder is, for the not-found message.

    Raises:
        DataError: the folder is missing or holds no images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{label} not found: {root}")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not (skip_masks and (p.stem.endswith("_mask") or MASK_DIRS & set(p.relative_to(root).parts)))
    )
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files
