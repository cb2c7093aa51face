"""Calibration images for the TensorRT INT8 calibrator: a reproducible sample of normal
images and the uint8 NHWC batches the model's `image` input takes.

The desktop has its own calibration sets (calibration/); the device cannot import them, so
this is the small device-side equivalent: same preprocessing as everywhere else
(edge_runtime.preprocess), same seed-based sampling, and a hash that identifies the set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.errors import DataError
from edge_runtime.imageio import find_images, read_rgb
from edge_runtime.preprocess import prepare

log = logging.getLogger(__name__)

# Folders of an MVTec-style tree that hold masks or defects, never calibration images.


def sample_images(folder: str | Path, num: int, seed: int = 0) -> list[Path]:
    """Up to `num` image files under `folder` (recursive), chosen reproducibly by `seed`."""
    if num < 1:
        raise DataError(f"--calib-num must be >= 1, got {num}")
    files = find_images(folder, skip_masks=True, label="calibration image folder")
    if len(files) <= num:
        return files
    idx = np.random.default_rng(seed).choice(len(files), size=num, replace=False)
    return [files[i] for i in sorted(idx)]


def calibration_set_sha256(paths: Sequence[Path]) -> str:
    """Identity of the calibration set (edge_runtime.bundle.calibration_set_sha256: image
    contents in calibration order), so calibrate and build-engine record comparable hashes."""
    from edge_runtime.bundle import calibration_set_sha256 as set_sha256
    from edge_runtime.bundle import sha256_file

    return set_sha256([sha256_file(p) for p in paths])


@dataclass(frozen=True)
class ImageBatches:
    """Iterable of uint8 [batch, H, W, 3] arrays; a final incomplete batch is dropped because
    a calibration batch must have exactly the calibration shape."""

    paths: tuple[Path, ...]
    size_hw: tuple[int, int]
    batch_size: int
    color_order: str = "RGB"
    resize: str = "area"
    # Raw-frame bundles: (input_format, (height, width)); each image becomes the camera frame.
    frame: tuple[str, tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.paths) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        if len(self) == 0:
            raise DataError(f"{len(self.paths)} calibration image(s) are fewer than one batch of {self.batch_size}")
        dropped = len(self.paths) % self.batch_size
        if dropped:
            log.info("calibration: last %d image(s) dropped (not a full batch of %d)", dropped, self.batch_size)
        for b in range(len(self)):
            chunk = self.paths[b * self.batch_size : (b + 1) * self.batch_size]
            yield np.stack([self._one(p) for p in chunk])

    def _one(self, path: Path) -> np.ndarray:
        if self.frame is not None:
            from edge_runtime.rawframe import to_frame

            return to_frame(read_rgb(path), self.frame[0], self.frame[1])
        return prepare(read_rgb(path), self.size_hw, color_order=self.color_order, method=self.resize)
