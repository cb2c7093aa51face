"""Training augmentation: rotation and scale (image and mask together), brightness, contrast,
Gaussian and salt-and-pepper noise (image only), configured by `augment:` in the train config.

Ops run on the model-size image in pixel space [0, 1] (float, after the device's own resize),
so the data set's preprocessing stays the device's; the result is normalised again with the
model's mean/std. The mask goes through the same affine warp with nearest-neighbour sampling,
so it stays binary and covers the same pixels as the defect it marks. Borders are reflected in
both, for the same reason.

Randomness is a function of (seed, epoch, item index), so a run is reproducible, a resumed run
augments like an uninterrupted one, and DataLoader workers need no seeding of their own.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from train.config import AugmentConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drawn:
    """The parameters drawn for one image (None = op not applied)."""

    angle_deg: float | None = None
    scale: float | None = None
    brightness: float | None = None  # additive, full-scale fraction
    contrast: float | None = None  # gain about the mean
    noise_std: float | None = None  # in [0, 1] pixel units
    salt_pepper: float | None = None


def draw(cfg: AugmentConfig, rng: np.random.Generator) -> Drawn:
    """Pick which ops fire and their parameters."""

    def fire(active: bool) -> bool:
        return active and rng.random() < cfg.prob

    lo, hi = cfg.scale
    return Drawn(
        angle_deg=float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)) if fire(cfg.rotation_deg > 0) else None,
        scale=float(rng.uniform(lo, hi)) if fire((lo, hi) != (1.0, 1.0)) else None,
        brightness=float(rng.uniform(-cfg.brightness, cfg.brightness)) if fire(cfg.brightness > 0) else None,
        contrast=float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)) if fire(cfg.contrast > 0) else None,
        noise_std=cfg.gaussian_noise / 255.0 if fire(cfg.gaussian_noise > 0) else None,
        salt_pepper=cfg.salt_pepper if fire(cfg.salt_pepper > 0) else None,
    )


def apply(image: np.ndarray, mask: np.ndarray, p: Drawn, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Augment one float32 HxWx3 image in [0, 1] and its HxW mask; returns new arrays."""
    import cv2

    image = np.asarray(image, np.float32)
    mask = np.asarray(mask, np.float32)
    if p.angle_deg is not None or p.scale is not None:
        h, w = mask.shape
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), p.angle_deg or 0.0, p.scale or 1.0)
        image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    if p.contrast is not None:
        image = (image - image.mean()) * p.contrast + image.mean()
    if p.brightness is not None:
        image = image + p.brightness
    if p.noise_std is not None:
        image = image + rng.normal(0.0, p.noise_std, image.shape).astype(np.float32)
    if p.salt_pepper is not None:
        hit = rng.random(mask.shape) < p.salt_pepper
        image = image.copy()
        image[hit] = rng.integers(0, 2, int(hit.sum()))[:, None].astype(np.float32)  # all channels black or white
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


class AugmentedDataset:
    """Wraps the training data set (`train.data.AnomalyDataset`): same items, with
    `pixel_values` and `mask` augmented. Set `epoch` before each epoch's DataLoader."""

    def __init__(self, base: Any, cfg: AugmentConfig, seed: int) -> None:
        self.base = base
        self.cfg = cfg
        self.seed = int(seed)
        self.epoch = 0
        self._mean = np.asarray(base.mean, np.float32).reshape(3, 1, 1)
        self._std = np.asarray(base.std, np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:  # samples, image_size, mean, std, image_uint8 ...
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        item = self.base[index]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        params = draw(self.cfg, rng)
        x = item["pixel_values"].numpy() * self._std + self._mean  # back to pixel space [0, 1]
        img, mask = apply(x.transpose(1, 2, 0), item["mask"].numpy(), params, rng)
        pixel = (img.transpose(2, 0, 1) - self._mean) / self._std
        return {
            **item,
            "pixel_values": torch.from_numpy(np.ascontiguousarray(pixel, np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32)),
        }


def with_augmentation(dataset: Any, cfg: AugmentConfig, seed: int) -> Any:
    """The training data set, wrapped when any augmentation is configured (else unchanged)."""
    if not cfg.enabled:
        return dataset
    log.info("augmentation on: %s", ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()))
    return AugmentedDataset(dataset, cfg, seed)


def set_epoch(dataset: Any, epoch: int) -> None:
    """Tell an augmented data set which epoch its next DataLoader serves (no-op otherwise;
    train.frame_module.RawFrameSamples augments before mosaicing and keeps its own epoch)."""
    from train.frame_module import RawFrameSamples

    if isinstance(dataset, (AugmentedDataset, RawFrameSamples)):
        dataset.epoch = int(epoch)
