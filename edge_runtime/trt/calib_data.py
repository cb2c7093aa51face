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

from edge_runtime.bundle import PreprocessSpec
from edge_runtime.errors import DataError
from edge_runtime.file_input import image_input
from edge_runtime.imageio import find_images

log = logging.getLogger(__name__)


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
    """Iterable of uint8 batches of the bundle's `image` input (each image read by
    `file_input.image_input`, as enrolment and parity read theirs: model-size HxWx3, or the
    camera frame for raw-frame bundles); a final incomplete batch is dropped because a
    calibration batch must have exactly the calibration shape."""

    paths: tuple[Path, ...]
    preprocess: PreprocessSpec
    batch_size: int

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
            yield np.stack([image_input(p, self.preprocess) for p in chunk])
