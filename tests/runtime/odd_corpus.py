"""A generated corpus of odd image files for `clipinspect run` on folder:// (issue 9 item 3).

`write_corpus(folder, copies)` writes `copies` files of every KIND (names sort in writing
order, so file i is frame i of one replay pass) and returns [(file name, kind)]. Each kind
says what the run must make of it: `judged` (an OK/NG verdict), an ERROR reason code, or
`any` (bit flips and truncated JPEGs sometimes still decode: then judged, else
`undecodable` / `odd_size`). The stream's geometry is BASE (the first file is a plain PNG).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

BASE = (48, 64)  # h, w of every good frame
MAX_PIXELS = 20_000  # the run's source.options.max_pixels: BIG below exceeds it


def _img(i: int, shape=BASE) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def _enc(ext: str, img: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok, ext
    return buf.tobytes()


def _pil(i: int, fmt: str, mode: str = "RGB", **save) -> bytes:
    from PIL import Image

    im = Image.fromarray(_img(i)[:, :, ::-1].copy()).convert(mode)
    out = io.BytesIO()
    im.save(out, fmt, **save)
    return out.getvalue()


def _exif_jpeg(i: int, orientation: int) -> bytes:
    from PIL import Image

    im = Image.fromarray(_img(i))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _png_with_dims(i: int, w: int, h: int) -> bytes:
    data = bytearray(_enc(".png", _img(i)))
    data[16:24] = struct.pack(">II", w, h)  # CRC now wrong too: a forged header
    return bytes(data)


def _tiff_with_dims(i: int, w: int, h: int) -> bytes:
    """A little-endian TIFF whose ImageWidth/ImageLength tags claim w x h."""
    data = bytearray(_enc(".tiff", _img(i)))
    assert data[:2] == b"II"
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    for k in range(n):
        at = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", data[at : at + 4])
        if tag in (256, 257):
            value = w if tag == 256 else h
            data[at + 2 : at + 4] = struct.pack("<H", 4)  # LONG, so the value fits
            data[at + 8 : at + 12] = struct.pack("<I", value)
    return bytes(data)


def _flip(i: int, ext: str) -> bytes:
    data = bytearray(_enc(ext, _img(i)))
    rng = np.random.default_rng(10_000 + i)
    for pos in rng.integers(0, len(data), 8):
        data[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(data)


# kind -> (file suffix, expected outcome, maker(i) -> bytes)
KINDS: dict[str, tuple[str, str, Callable[[int], bytes]]] = {
    "png": (".png", "judged", lambda i: _enc(".png", _img(i))),
    "jpeg": (".jpg", "judged", lambda i: _enc(".jpg", _img(i), [cv2.IMWRITE_JPEG_QUALITY, 90])),
    "progressive_jpeg": (".jpg", "judged", lambda i: _enc(".jpg", _img(i), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])),
    "bmp": (".bmp", "judged", lambda i: _enc(".bmp", _img(i))),
    "tiff": (".tiff", "judged", lambda i: _enc(".tiff", _img(i))),
    "png_16bit": (".png", "judged", lambda i: _enc(".png", _img(i).astype(np.uint16) * 257)),
    "png_rgba": (".png", "judged", lambda i: _enc(".png", np.dstack([_img(i), np.full(BASE, 128, np.uint8)]))),
    "png_grey": (".png", "judged", lambda i: _enc(".png", _img(i)[:, :, 0])),
    "cmyk_jpeg": (".jpg", "judged", lambda i: _pil(i, "JPEG", "CMYK")),
    "exif_rotated_180": (".jpg", "judged", lambda i: _exif_jpeg(i, 3)),
    "exif_rotated_90": (".jpg", "odd_size", lambda i: _exif_jpeg(i, 6)),
    "uppercase_suffix": (".PNG", "judged", lambda i: _enc(".png", _img(i))),
    "wrong_suffix_png_as_jpg": (".jpg", "judged", lambda i: _enc(".png", _img(i))),
    "empty": (".png", "empty_file", lambda i: b""),
    "text": (".png", "undecodable", lambda i: f"this is not an image #{i}\n".encode()),
    "random_bytes": (
        ".jpg",
        "undecodable",
        lambda i: np.random.default_rng(i).integers(0, 256, 512, dtype=np.uint8).tobytes(),
    ),
    "truncated_png": (".png", "undecodable", lambda i: _enc(".png", _img(i))[: 40 + i % 50]),
    "png_signature_only": (".png", "undecodable", lambda i: b"\x89PNG\r\n\x1a\n"),
    "truncated_jpeg": (".jpg", "any", lambda i: _enc(".jpg", _img(i))[: 200 + 13 * (i % 40)]),
    "tiny_2x2": (".png", "odd_size", lambda i: _enc(".png", _img(i, (2, 2)))),
    "one_pixel": (".png", "odd_size", lambda i: _enc(".png", _img(i, (1, 1)))),
    "other_size": (".jpg", "odd_size", lambda i: _enc(".jpg", _img(i, (64, 48)))),
    "too_many_pixels": (".png", "image_too_large", lambda i: _enc(".png", _img(i, (160, 160)))),
    "huge_dims_header": (".png", "image_too_large", lambda i: _png_with_dims(i, 100_000, 100_000)),
    "huge_dims_tiff": (".tiff", "image_too_large", lambda i: _tiff_with_dims(i, 30_000, 30_000)),
    "zero_dims_header": (".png", "undecodable", lambda i: _png_with_dims(i, 0, 0)),
    "bitflip_png": (".png", "any", lambda i: _flip(i, ".png")),
    "bitflip_jpeg": (".jpg", "any", lambda i: _flip(i, ".jpg")),
    "bitflip_bmp": (".bmp", "any", lambda i: _flip(i, ".bmp")),
}


def write_corpus(folder: Path, copies: int) -> list[tuple[str, str]]:
    """Write the corpus; returns [(file name, kind)] in replay (name) order."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    (folder / "00000_first.png").write_bytes(_enc(".png", _img(0)))
    files.append(("00000_first.png", "png"))
    n = 1
    for c in range(copies):
        for kind, (suffix, _, make) in KINDS.items():
            name = f"{n:05d}_{kind}{suffix}"
            (folder / name).write_bytes(make(n + c))
            files.append((name, kind))
            n += 1
    return files
