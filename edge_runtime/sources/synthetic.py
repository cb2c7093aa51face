"""synthetic://?width=..&height=..&fps=..&count=..&pixel_format=BayerRG8&seed=0&defect_every=10

A deterministic stand-in for a line camera: a textured part with occasional synthetic
defects (a dark scratch), delivered as RGB8, BGR8, Mono8 or a Bayer mosaic exactly as a
colour camera would send it. Frame i depends only on (seed, i), so runs are repeatable.

Large frames come from a ring (`ring=N`, default: 0 = render every frame below 2 MP, else
the defect period or 8): N frames are rendered once per (size, format, seed) and then handed
out in turn, uncopied and read-only, frame i being ring frame i mod N. A camera delivers by
DMA with no CPU work per pixel; rendering a 4096x2160 frame costs ~100 ms of CPU, which would
make the source, not the pipeline, what a 4K benchmark measures.
"""

from __future__ import annotations

import functools

import numpy as np

from edge_runtime.errors import SourceError
from edge_runtime.frames import Frame
from edge_runtime.sources.base import EndOfStream, Pacer, SourceBase
from edge_runtime.sources.options import SourceOptions
from edge_runtime.sources.uri import SourceUri, int_param

RING_FROM_PIXELS = 2_000_000
PIXEL_FORMATS = ("RGB8", "BGR8", "Mono8", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8")
_CHANNEL = {"R": 0, "G": 1, "B": 2}


def mosaic(rgb: np.ndarray, pixel_format: str) -> np.ndarray:
    """The HxW Bayer frame a camera with `pixel_format` would deliver for an RGB image.

    Args:
        rgb: HxWx3 RGB pixels.
        pixel_format: GenICam PFNC name, e.g. BayerRG8 (the top-left 2x2 block, row by row).

    Returns:
        The HxW mosaic, same dtype.

    Raises:
        ValueError: not a Bayer pixel format.
    """
    if not pixel_format.startswith("Bayer") or len(pixel_format) < 7:
        raise ValueError(f"not a Bayer pixel format: {pixel_format}")
    a, b = pixel_format[5], pixel_format[6]
    # The other diagonal of an RG/BG block is G; of a GR/GB block it is the missing colour.
    pattern = {"RG": "RGGB", "BG": "BGGR", "GR": "GRBG", "GB": "GBRG"}[a + b]
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for i, colour in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, _CHANNEL[colour]]
    return out


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, coloured, non-periodic surface (like brushed metal or a moulded part)."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 200, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    base = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 12.0 * np.sin(xx * 0.35 + yy * 0.05)[..., None]
    return np.clip(base + stripes, 0, 255).astype(np.uint8)


def noise_field(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Sensor noise drawn once per source; frames shift it (see `render`) because drawing
    26 M normals per 4096x2160 frame costs ~0.7 s and would make the source the bottleneck."""
    rng = np.random.default_rng([seed, 0x5EED])
    return np.clip(rng.normal(0.0, 3.0, size=shape), -127, 127).astype(np.int16)


def render(
    base: np.ndarray, index: int, seed: int, defect: bool, noise: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """Frame `index`: the base texture with sensor noise and, if `defect`, a dark scratch.

    Args:
        base: the texture from `texture`.
        index: the frame number (with `seed`, all that the frame depends on).
        seed: the source's seed.
        defect: draw a scratch.
        noise: the noise field from `noise_field`; drawn here when None.

    Returns:
        The RGB image and its meta: `defect`, and `defect_box` (x, y, w, h) for a scratch.
    """
    import cv2

    rng = np.random.default_rng([seed, index])
    if noise is None:
        noise = noise_field(base.shape, seed)
    # A per-frame, deterministic shift of the shared noise field: frames differ like a sensor's.
    shifted = np.roll(noise, (index * 7919) % base.shape[0], axis=0)
    img = np.clip(base.astype(np.int16) + shifted, 0, 255).astype(np.uint8)
    info: dict = {"defect": defect}
    if defect:
        h, w = img.shape[:2]
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1 = int(np.clip(x0 + rng.integers(-w // 3, w // 3 + 1), 0, w - 1))
        y1 = int(np.clip(y0 + rng.integers(-h // 3, h // 3 + 1), 0, h - 1))
        thickness = max(1, min(h, w) // 40)
        cv2.line(img, (x0, y0), (x1, y1), (20, 20, 20), thickness)
        info["defect_box"] = (min(x0, x1), min(y0, y1), abs(x1 - x0) + thickness, abs(y1 - y0) + thickness)
    return img, info


def _frame(
    base: np.ndarray, i: int, seed: int, defect_every: int, noise: np.ndarray | None, fmt: str
) -> tuple[np.ndarray, dict]:
    """Frame `i` in pixel format `fmt`, with its meta (defect, defect_box)."""
    defect = bool(defect_every) and i % defect_every == defect_every - 1
    rgb, info = render(base, i, seed, defect, noise)
    if fmt == "RGB8":
        image = rgb
    elif fmt == "BGR8":
        image = np.ascontiguousarray(rgb[:, :, ::-1])
    elif fmt == "Mono8":
        image = np.ascontiguousarray(rgb.mean(axis=2).round().astype(np.uint8))
    else:
        image = mosaic(rgb, fmt)
    return image, info


@functools.lru_cache(maxsize=1)
def _ring(
    width: int, height: int, fmt: str, seed: int, defect_every: int, size: int
) -> tuple[tuple[np.ndarray, dict], ...]:
    """The pre-rendered frames of a ring (kept for the process: a bench reopens the source
    for each round). Read-only, so a consumer that tried to draw on one fails loudly."""
    base = texture(height, width, seed)
    noise = noise_field(base.shape, seed)
    frames = []
    for i in range(size):
        image, info = _frame(base, i, seed, defect_every, noise, fmt)
        image.flags.writeable = False
        frames.append((image, info))
    return tuple(frames)


class SyntheticSource(SourceBase):
    """Deterministic generated frames (a textured part, a scratch every `defect_every`).

    Args:
        parsed: a `synthetic://?key=value...` URI (no target).
        options: pixel_format (RGB8, BGR8, Mono8 or a Bayer format) and fps are applied.
        params: the URI's own keys: width, height, count, seed, defect_every, ring.

    Raises:
        SourceError: a target after `synthetic://`, a bad own key, an unknown pixel format,
            odd Bayer sizes, or a ring that is not a multiple of defect_every.
    """

    OWN_KEYS = ("width", "height", "count", "seed", "defect_every", "ring")
    stat_keys = ("defects",)
    applies = frozenset(
        {
            "pixel_format",
            "fps",
            "timeout_ms",
            "reconnect",
            "reconnect_attempts",
            "reconnect_backoff_s",
            "buffer_count",
            "buffer_handling",
        }
    )

    def __init__(self, parsed: SourceUri, options: SourceOptions, params: dict[str, str]) -> None:
        super().__init__(parsed.raw, options)
        if parsed.target:
            raise SourceError(f"synthetic source takes only query parameters, got {parsed.target!r} in {parsed.raw!r}")
        self.width = int_param(params, "width", 640, parsed.raw, minimum=2)
        self.height = int_param(params, "height", 480, parsed.raw, minimum=2)
        self.total = int_param(params, "count", 0, parsed.raw)  # 0 = endless
        self.seed = int_param(params, "seed", 0, parsed.raw)
        self.defect_every = int_param(params, "defect_every", 10, parsed.raw)  # 0 = never
        default_ring = 0 if self.width * self.height < RING_FROM_PIXELS else (self.defect_every or 8)
        self.ring = int_param(params, "ring", default_ring, parsed.raw)  # 0 = render every frame
        if self.ring and self.defect_every and self.ring % self.defect_every:
            raise SourceError(
                f"{parsed.raw}: ring={self.ring} must be a multiple of defect_every={self.defect_every} (defects keep their period)"
            )
        self.pixel_format = options.pixel_format or "RGB8"
        if self.pixel_format not in PIXEL_FORMATS:
            raise SourceError(
                f"synthetic source cannot make pixel_format {self.pixel_format!r} (choose from {', '.join(PIXEL_FORMATS)})"
            )
        if self.pixel_format.startswith("Bayer") and (self.width % 2 or self.height % 2):
            raise SourceError(
                f"{parsed.raw}: Bayer frames need an even width and height, got {self.width}x{self.height}"
            )
        self.camera_serial = f"synthetic-{self.seed}"
        self._pacer = Pacer(options.fps)
        self._base: np.ndarray | None = None
        self._noise: np.ndarray | None = None
        self._index = 0

    def _open(self) -> None:
        if not self.ring:
            self._base = texture(self.height, self.width, self.seed)
            self._noise = noise_field(self._base.shape, self.seed)

    def _grab(self) -> Frame | None:
        if self.total and self._index >= self.total:
            raise EndOfStream
        i = self._index
        self._index += 1
        if self.ring:
            image, info = _ring(self.width, self.height, self.pixel_format, self.seed, self.defect_every, self.ring)[
                i % self.ring
            ]
            info = dict(info)
        else:
            assert self._base is not None
            image, info = _frame(self._base, i, self.seed, self.defect_every, self._noise, self.pixel_format)
        if info["defect"]:
            self.count("defects")
        self._pacer.wait()
        return self.make_frame(image, self.pixel_format, index=i, **info)

    def _close(self) -> None:
        self._base = None
        self._noise = None
