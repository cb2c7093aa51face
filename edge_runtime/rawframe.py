"""Raw-frame bundles: the camera's uint8 frame is the graph input (no CPU pixel work).

The graph (defined once by `train.frame_module.FramePreprocess`, used by training and export)
casts the frame to float, crops the ROI, bins whole Bayer quads (means over blocks, then one
small colour matrix: every output pixel averages the samples of its colour in its block, so
no interpolation and no aliasing from skipped pixels), resizes the binned planes to the model size with area weights (two small MatMuls)
and normalises. This module holds the torch-free parts both sides need: the format table,
the binning/resampling plan and its weights, and frame checks for the runtime.

Formats are named as the CLI names them; each maps to the GenICam PFNC name a camera
reports in `Frame.meta['pixel_format']`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import ConfigError, DataError

# CLI name -> (GenICam pixel format, channels in the frame, pattern of colour indices R=0 G=1 B=2)
# The pattern is the repeating block of the frame seen as a 2-D plane; for interleaved RGB the
# plane is H x (W*3), so its block is one row of three samples.
FORMATS: dict[str, tuple[str, int, tuple[tuple[int, ...], ...]]] = {
    "rgb8": ("RGB8", 3, ((0, 1, 2),)),
    "bgr8": ("BGR8", 3, ((2, 1, 0),)),
    "bayer_rg8": ("BayerRG8", 1, ((0, 1), (1, 2))),
    "bayer_bg8": ("BayerBG8", 1, ((2, 1), (1, 0))),
    "bayer_gr8": ("BayerGR8", 1, ((1, 0), (2, 1))),
    "bayer_gb8": ("BayerGB8", 1, ((1, 2), (0, 1))),
    "mono8": ("Mono8", 1, ((-1,),)),  # -1: the one sample feeds all three channels
}
INPUT_FORMATS = tuple(FORMATS)


def pixel_format(input_format: str) -> str:
    """'bayer_rg8' -> 'BayerRG8' (the name a GenICam camera reports)."""
    return FORMATS[check_format(input_format)][0]


def check_format(input_format: str) -> str:
    """Return `input_format` unchanged if it is one of FORMATS.

    Raises:
        ConfigError: an unknown format, naming the known ones.
    """
    if input_format not in FORMATS:
        raise ConfigError(f"unknown input format {input_format!r} (choose from {', '.join(INPUT_FORMATS)})")
    return input_format


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """'4096x2160' (width x height, as cameras name it) -> (height, width)."""
    try:
        if isinstance(text, str):
            w, h = (int(p) for p in text.lower().split("x"))
        else:
            w, h = (int(p) for p in text)
    except ValueError:
        raise ConfigError(f"input size must be WIDTHxHEIGHT, e.g. 4096x2160, got {text!r}") from None
    if w < 2 or h < 2:
        raise ConfigError(f"input size must be at least 2x2, got {text!r}")
    return h, w


def frame_shape(input_format: str, input_size_hw: Sequence[int]) -> tuple[int, ...]:
    """The frame array's shape: (H, W) for Bayer/mono, (H, W, 3) for RGB/BGR."""
    h, w = int(input_size_hw[0]), int(input_size_hw[1])
    return (h, w, 3) if FORMATS[check_format(input_format)][1] == 3 else (h, w)


@dataclass(frozen=True)
class FramePlan:
    """Where the graph reads and how it bins: everything the torch module needs, as numbers.

    Rows `y0:y1` and plane columns `x0:x1` of the frame (ROI, trimmed to whole blocks) are
    binned by `(by, bx)` samples per block (whole colour-pattern repeats); the binned grid
    (`grid_hw`) is then resampled to `model_hw`."""

    input_format: str
    model_hw: tuple[int, int]
    y0: int
    y1: int
    x0: int  # in plane columns (frame columns x channels for interleaved RGB)
    x1: int
    by: int  # block height in frame rows
    bx: int  # block width in plane columns
    grid_hw: tuple[int, int]

    @property
    def pattern_hw(self) -> tuple[int, int]:
        """Rows and columns of one colour-pattern repeat in plane samples ((2, 2) for Bayer, (1, 3) for RGB, (1, 1) for mono)."""
        pattern = FORMATS[self.input_format][2]
        return len(pattern), len(pattern[0])

    def colour_weight(self) -> np.ndarray:
        """[ph*pw, 3] float32: block means of each pattern position -> mean of each colour."""
        pattern = np.asarray(FORMATS[self.input_format][2]).reshape(-1)
        w = np.zeros((pattern.size, 3), np.float32)
        for c in range(3):
            sel = (pattern == c) | (pattern == -1)
            w[sel, c] = 1.0 / sel.sum()
        return w

    def resample_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(Ay [H_model, H_grid], AxT [W_grid, W_model]) float32."""
        return resample_matrix(self.grid_hw[0], self.model_hw[0]), np.ascontiguousarray(
            resample_matrix(self.grid_hw[1], self.model_hw[1]).T
        )


def make_plan(
    input_format: str, input_size_hw: Sequence[int], model_hw: Sequence[int], roi: Sequence[int] | None = None
) -> FramePlan:
    """Bin factor = the largest whole number of colour blocks that keeps the binned grid at
    least the model size; the area resample then shrinks by less than 2x (anti-aliased).

    Args:
        input_format: one of FORMATS, e.g. 'bayer_rg8'.
        input_size_hw: the camera frame's (height, width).
        model_hw: the (height, width) the model sees.
        roi: (x, y, width, height) in frame pixels, or None for the whole frame.

    Raises:
        ConfigError: an unknown format or an ROI that does not fit (see `check_roi`).
    """
    fmt = check_format(input_format)
    _, channels, pattern = FORMATS[fmt]
    ph, pw = len(pattern), len(pattern[0])
    h, w = int(input_size_hw[0]), int(input_size_hw[1])
    th, tw = int(model_hw[0]), int(model_hw[1])
    rx, ry, rw, rh = check_roi(fmt, (h, w), roi)
    cells_y, cells_x = rh // ph, (rw * channels) // pw  # colour blocks (quads, RGB triples, pixels)
    ky, kx = _bin_factor(cells_y, th), _bin_factor(cells_x, tw)
    gh, gw = cells_y // ky, cells_x // kx
    # Rows/columns that do not fill a whole block (none when the factor divides) are
    # dropped evenly on both sides.
    oy = ry + (cells_y - gh * ky) // 2 * ph
    ox = rx * channels + (cells_x - gw * kx) // 2 * pw
    return FramePlan(fmt, (th, tw), oy, oy + gh * ky * ph, ox, ox + gw * kx * pw, ky * ph, kx * pw, (gh, gw))


def _bin_factor(cells: int, target: int) -> int:
    """Largest factor that keeps >= `target` bins; a factor dividing `cells` exactly is
    preferred down to 3/4 of that (no crop, hence no full-frame copy in the graph)."""
    k = max(1, cells // target)
    for d in range(k, max(1, (3 * k) // 4) - 1, -1):
        if cells % d == 0:
            return d
    return k


def check_roi(input_format: str, input_size_hw: Sequence[int], roi: Sequence[int] | None) -> tuple[int, int, int, int]:
    """The ROI (x, y, width, height) inside the frame; the whole frame when None.

    Raises:
        ConfigError: the ROI leaves the frame, or (Bayer) starts or extends on an odd pixel.
    """
    h, w = int(input_size_hw[0]), int(input_size_hw[1])
    rx, ry, rw, rh = (0, 0, w, h) if roi is None else (int(v) for v in roi)
    if rx < 0 or ry < 0 or rw <= 0 or rh <= 0 or rx + rw > w or ry + rh > h:
        raise ConfigError(f"ROI {rx},{ry},{rw},{rh} does not lie inside the {w}x{h} frame")
    if len(FORMATS[check_format(input_format)][2]) == 2 and (rx % 2 or ry % 2 or rw % 2 or rh % 2):
        raise ConfigError(
            f"a Bayer ROI must start and extend on even pixels (keeps the colour pattern), got {rx},{ry},{rw},{rh}"
        )
    return rx, ry, rw, rh


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights: area (box overlap) when shrinking, linear (half-pixel centres,
    edge-clamped) when enlarging; each row sums to 1."""
    m = np.zeros((n_out, n_in), np.float64)
    if n_out <= n_in:
        scale = n_in / n_out
        for i in range(n_out):
            lo, hi = i * scale, (i + 1) * scale
            for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
                m[i, j] = min(hi, j + 1) - max(lo, j)
    else:
        for i in range(n_out):
            src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
            j = int(np.floor(src))
            f = src - j
            m[i, j] += 1 - f
            m[i, min(j + 1, n_in - 1)] += f
    return (m / m.sum(axis=1, keepdims=True)).astype(np.float32)


def mosaic_frame(rgb: np.ndarray, input_format: str) -> np.ndarray:
    """An RGB HxWx3 uint8 image as the camera with `input_format` would deliver it."""
    fmt = check_format(input_format)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataError(f"expected an RGB HxWx3 uint8 image, got {rgb.dtype} {list(rgb.shape)}")
    if fmt == "rgb8":
        return np.ascontiguousarray(rgb)
    if fmt == "bgr8":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if fmt == "mono8":
        import cv2

        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    pattern = FORMATS[fmt][2]
    out = np.empty(rgb.shape[:2], np.uint8)
    for dy in range(2):
        for dx in range(2):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, pattern[dy][dx]]
    return out


def to_frame(rgb: np.ndarray, input_format: str, input_size_hw: Sequence[int]) -> np.ndarray:
    """An image file's RGB pixels as the raw frame a raw-frame bundle takes: resized to the
    camera's frame size (area when shrinking, linear when enlarging), then mosaiced. Used by
    training's data loader and by parity checks on image folders."""
    return mosaic_frame(resize_to_frame(rgb, input_size_hw), input_format)


def resize_to_frame(rgb: np.ndarray, input_size_hw: Sequence[int]) -> np.ndarray:
    """An image resized to the camera's frame size (area when shrinking, linear when
    enlarging): the scene before the sensor's mosaic (training augments it here)."""
    import cv2

    h, w = int(input_size_hw[0]), int(input_size_hw[1])
    if rgb.shape[:2] != (h, w):
        shrink = rgb.shape[0] >= h and rgb.shape[1] >= w
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return rgb


def frame_region(
    input_format: str, input_size_hw: Sequence[int], model_hw: Sequence[int], roi: Sequence[int] | None = None
) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) in frame pixels: the part of the frame the graph actually maps onto
    the model grid (the ROI, trimmed to whole bin blocks). Training maps masks through it."""
    plan = make_plan(input_format, input_size_hw, model_hw, roi)
    channels = FORMATS[plan.input_format][1]
    return plan.y0, plan.y1, plan.x0 // channels, plan.x1 // channels
