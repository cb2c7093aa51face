"""Preprocessing: one set of pure functions used by training, export parity checks and the device.

camera image (any size, Bayer/mono/BGR/RGB) -> optional ROI crop -> colour conversion to the
model's order -> resize to the model size -> uint8 HxWx3. Mean/std normalisation happens in
the ONNX graph for the default uint8 input; `normalize` is the numpy reference of that step.

Resizing: images are resized straight to the model's square size (no centre crop) so that
pixel masks keep their alignment, as AnomalyCLIP does. Large frames are first halved by 2x2
binning (the mean of each 2x2 block: cheap, anti-aliased) until less than twice the target,
then INTER_AREA; the expensive full-frame INTER_AREA never runs (DESIGN §6).

Large Bayer frames are not demosaiced at full resolution: each 2x2 quad becomes one RGB pixel
(R, mean of the two G, B), which is the first 2x2 binning step of an RGB image done on the
mosaic, so a camera's Bayer frame and an RGB file of the same scene go through the same
halving-then-area path; training (train/data.py) prepares its images with these functions.
Measured on a 2-core Xeon (AVX-512), 4096x2160 BayerRG8 -> 224: ~5 ms instead of ~22 ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import DataError

# Bayer layouts as the camera names them (GenICam PFNC: pattern of the top-left 2x2 block).
# OpenCV's Bayer codes are named after the 2x2 block starting at pixel (1,1), hence the shift:
# a camera's BayerRG is OpenCV's BayerBG.
_BAYER_TO_RGB = {
    "BayerRG8": "COLOR_BayerBG2RGB",
    "BayerBG8": "COLOR_BayerRG2RGB",
    "BayerGR8": "COLOR_BayerGB2RGB",
    "BayerGB8": "COLOR_BayerGR2RGB",
}

# OpenAI CLIP's pixel normalisation: the default of every bundle and every CLIP we make.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERP = {"area": "INTER_AREA", "linear": "INTER_LINEAR", "cubic": "INTER_CUBIC"}


@dataclass(frozen=True)
class Roi:
    """A region of interest in camera pixels (x, y = top-left corner), cropped before anything else."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str | Sequence[int] | None) -> Roi | None:
        """Parse "x,y,width,height" (or four ints) from a flag or config; None or "" means no ROI.

        Raises:
            DataError: not four whole numbers, a negative corner, or a non-positive size.
        """
        if text is None or text == "":
            return None
        try:
            parts = [int(p) for p in (text.split(",") if isinstance(text, str) else text)]
        except ValueError:
            raise DataError(f"ROI must be x,y,width,height in whole pixels, got {text!r}") from None
        if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0 or parts[0] < 0 or parts[1] < 0:
            raise DataError(f"ROI must be x,y,width,height with positive size, got {text!r}")
        return cls(*parts)


def crop_roi(image: np.ndarray, roi: Roi | None) -> np.ndarray:
    """The `roi` part of `image` as a view (no copy); the image itself when `roi` is None.

    Raises:
        DataError: the ROI reaches past the image.
    """
    if roi is None:
        return image
    h, w = image.shape[:2]
    if roi.x + roi.width > w or roi.y + roi.height > h:
        raise DataError(f"ROI {roi} lies outside the {w}x{h} image")
    return image[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]


# Position (row, col) of R and B in a camera's top-left 2x2 block (GenICam names).
_BAYER_RB = {
    "BayerRG8": ((0, 0), (1, 1)),
    "BayerBG8": ((1, 1), (0, 0)),
    "BayerGR8": ((0, 1), (1, 0)),
    "BayerGB8": ((1, 0), (0, 1)),
}


def bin_bayer(raw: np.ndarray, pixel_format: str) -> np.ndarray:
    """Bayer HxW -> RGB (H/2)x(W/2): each 2x2 quad gives R, the mean of its two G, and B
    (quad-binning demosaic: no interpolation, half the resolution)."""
    if pixel_format not in _BAYER_RB:
        raise DataError(f"not a Bayer pixel format: {pixel_format}")
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise DataError(f"{pixel_format} frame must be 2-D uint8, got {raw.dtype} {list(raw.shape)}")
    import cv2

    h, w = raw.shape[0] // 2 * 2, raw.shape[1] // 2 * 2
    (ry, rx), (by, bx) = _BAYER_RB[pixel_format]
    quads = raw[:h, :w].reshape(h // 2, 2, w // 2, 2)
    plane = lambda y, x: np.ascontiguousarray(quads[:, y, :, x])  # noqa: E731
    green = cv2.addWeighted(plane(ry, 1 - rx), 0.5, plane(by, 1 - bx), 0.5, 0.0)
    return cv2.merge([plane(ry, rx), green, plane(by, bx)])


def halve(image: np.ndarray) -> np.ndarray:
    """2x2 binning (mean of each 2x2 block; OpenCV's integer-scale INTER_AREA)."""
    import cv2

    h, w = image.shape[0] // 2, image.shape[1] // 2
    return cv2.resize(image[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)


def to_rgb(image: np.ndarray, pixel_format: str = "RGB8") -> np.ndarray:
    """Convert a camera image to HxWx3 uint8 RGB. `pixel_format` uses GenICam names.

    Raises:
        DataError: not 8-bit, a shape that does not fit the format, or an unsupported format.
    """
    import cv2

    if image.dtype != np.uint8:
        raise DataError(f"expected 8-bit pixels, got {image.dtype} ({pixel_format})")
    if pixel_format in _BAYER_TO_RGB:
        if image.ndim != 2:
            raise DataError(f"{pixel_format} frame must be 2-D, got shape {image.shape}")
        return cv2.cvtColor(image, getattr(cv2, _BAYER_TO_RGB[pixel_format]))
    if pixel_format == "Mono8" or image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"cannot interpret image of shape {image.shape} as {pixel_format}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if pixel_format in ("BGR8", "BGRa8"):
        return image[:, :, ::-1]
    if pixel_format in ("RGB8", "RGBa8"):
        return image
    raise DataError(f"unsupported pixel format {pixel_format!r}")


def resize_to(image: np.ndarray, size_hw: tuple[int, int], method: str = "area") -> np.ndarray:
    """Resize to (height, width): 2x2 binning while >= 2x the target, then `method`
    (INTER_AREA when shrinking, INTER_LINEAR when enlarging or for method 'linear')."""
    import cv2

    th, tw = int(size_hw[0]), int(size_hw[1])
    h, w = image.shape[:2]
    while h >= 2 * th and w >= 2 * tw:
        image = halve(image)
        h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return np.ascontiguousarray(image)
    interp = _INTERP.get(method)
    if interp is None:
        raise DataError(f"unknown resize method {method!r}")
    if method == "area" and (h < th or w < tw):
        interp = "INTER_LINEAR"  # INTER_AREA is for shrinking; enlarging with it is nearest-like
    return cv2.resize(image, (tw, th), interpolation=getattr(cv2, interp))


def prepare(
    image: np.ndarray,
    size_hw: tuple[int, int],
    *,
    pixel_format: str = "RGB8",
    color_order: str = "RGB",
    roi: Roi | None = None,
    method: str = "area",
) -> np.ndarray:
    """Camera/file image -> model-size HxWx3 uint8 in the model's colour order.

    The one preprocessing path for model-size bundles (raw-frame bundles preprocess inside
    the graph): training, export parity and the device all call it, so the scores they
    compute from the same file agree.

    Args:
        image: the camera frame or decoded file (2-D for Bayer/mono, HxWx3/4 otherwise).
        size_hw: the model's (height, width).
        pixel_format: GenICam name of the image's layout ("RGB8", "BayerRG8", "Mono8", ...).
        color_order: the model's channel order, "RGB" or "BGR".
        roi: crop applied first, in camera pixels.
        method: final resize, "area", "linear" or "cubic" (see `resize_to`).

    Returns:
        A contiguous uint8 array of shape (height, width, 3).

    Raises:
        DataError: a bad ROI, pixel format, shape or resize method.
    """
    # Crop first (fewest pixels touched), then colour: a large Bayer frame is quad-binned to
    # half resolution, a small one demosaiced at full resolution; then shrink.
    img = crop_roi(image, roi)
    th, tw = int(size_hw[0]), int(size_hw[1])
    if pixel_format in _BAYER_RB and img.ndim == 2 and img.shape[0] >= 2 * th and img.shape[1] >= 2 * tw:
        img = bin_bayer(img, pixel_format)  # the first halving, done on the mosaic
    else:
        img = to_rgb(img, pixel_format)
    img = resize_to(img, size_hw, method)
    if color_order == "BGR":
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def normalize(batch_uint8_nhwc: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, (x/255 - mean)/std. Reference for the in-graph step."""
    x = batch_uint8_nhwc.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def upsample_map(anomaly_map: np.ndarray, size_hw: tuple[int, int], sigma: float = 0.0) -> np.ndarray:
    """Patch-grid map [h, w] -> image-size map (bilinear), optionally Gaussian-smoothed
    (AnomalyCLIP uses sigma 4 at 518 px). Used by eval and by the device's heatmaps."""
    import cv2

    out = cv2.resize(anomaly_map.astype(np.float32), (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return out
