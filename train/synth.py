"""A synthetic inspection data set in the MVTec AD layout, for demos and tests.

Procedural textures stand in for products (wood grain, brushed metal, woven fabric, speckled
plastic, tiles, cork) and the line's three defect classes (scratch, contamination, crack) are
drawn on them with exact pixel masks. Everything is derived from the seed: each image has its
own generator seeded with (seed, category, split, class, index), so the same seed gives
byte-identical PNG files, and changing one count does not change the other images.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.errors import DataError

log = logging.getLogger(__name__)

DEFECTS = ("scratch", "contamination", "crack")
_SPLIT_CODE = {"train": 0, "test": 1}
_CLASS_CODE = {"good": 0, **{d: i + 1 for i, d in enumerate(DEFECTS)}}


@dataclass(frozen=True)
class SynthSpec:
    seed: int = 0
    categories: int = 4
    size: int = 128
    train_good: int = 8
    per_class: int = 4  # test images per class: test/good and each test/<defect>
    defects: tuple[str, ...] = DEFECTS

    def __post_init__(self) -> None:
        if not 1 <= self.categories <= len(TEXTURES):
            raise DataError(f"categories must be between 1 and {len(TEXTURES)}, got {self.categories}")
        if not 32 <= self.size <= 1024:
            raise DataError(f"size must be between 32 and 1024 px, got {self.size}")
        if self.train_good < 0 or self.per_class < 1:
            raise DataError("train_good must be >= 0 and per_class >= 1")
        unknown = [d for d in self.defects if d not in DEFECTS]
        if unknown:
            raise DataError(f"unknown defect {unknown[0]!r} (known: {', '.join(DEFECTS)})")


@dataclass
class SynthSummary:
    root: Path
    categories: list[str]
    images: int = 0
    masks: int = 0
    files: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------ textures (float RGB 0..255)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_x: float, sigma_y: float | None = None) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise."""
    import cv2

    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(
        n, (0, 0), sigmaX=sigma_x, sigmaY=sigma_x if sigma_y is None else sigma_y, borderType=cv2.BORDER_REFLECT
    )
    return (n - n.mean()) / (n.std() + 1e-6)


def _palette(t: np.ndarray, dark: tuple[float, float, float], light: tuple[float, float, float]) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)[..., None]
    return np.asarray(dark, np.float32) * (1 - t) + np.asarray(light, np.float32) * t


def _jitter(
    rng: np.random.Generator, rgb: tuple[float, float, float], amount: float = 12.0
) -> tuple[float, float, float]:
    r, g, b = (np.asarray(rgb) + rng.uniform(-amount, amount, 3)).tolist()
    return (r, g, b)


def _wood(rng: np.random.Generator, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    angle = rng.uniform(-0.2, 0.2)
    warp = _smooth_noise(rng, s, s / 10) * (s / 18)
    period = s / rng.uniform(6, 9)
    rings = 0.5 + 0.5 * np.sin(
        2 * np.pi * (y * np.cos(angle) + x * np.sin(angle) + warp) / period + rng.uniform(0, 6.3)
    )
    grain = _smooth_noise(rng, s, s / 20, 0.6) * 0.08
    return _palette(rings**1.5 * 0.8 + grain + 0.1, _jitter(rng, (105, 62, 32)), _jitter(rng, (196, 146, 92)))


def _metal(rng: np.random.Generator, s: int) -> np.ndarray:
    streaks = _smooth_noise(rng, s, s / 4, 0.5)
    shade = np.linspace(-1, 1, s, dtype=np.float32)[:, None] * rng.uniform(-0.15, 0.15)
    t = 0.55 + 0.12 * streaks + shade + 0.03 * _smooth_noise(rng, s, 0.7)
    return _palette(t, _jitter(rng, (70, 74, 80), 6), _jitter(rng, (215, 218, 224), 6))


def _fabric(rng: np.random.Generator, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    p = max(4.0, s / rng.uniform(14, 18))
    ox, oy = rng.uniform(0, p, 2)
    over = ((np.floor((x + ox) / p) + np.floor((y + oy) / p)) % 2).astype(np.float32)
    warp = np.abs(np.sin(np.pi * (x + ox) / p))
    weft = np.abs(np.sin(np.pi * (y + oy) / p))
    t = over * warp + (1 - over) * weft
    t = 0.25 + 0.6 * t + 0.05 * _smooth_noise(rng, s, 1.0)
    return _palette(t, (25, 25, 35), _jitter(rng, (90, 110, 190)))


def _plastic(rng: np.random.Generator, s: int) -> np.ndarray:
    base = np.asarray(_jitter(rng, (205, 200, 185), 10), np.float32)
    img = np.broadcast_to(base, (s, s, 3)).copy()
    img += (4 * _smooth_noise(rng, s, s / 16))[..., None]
    n = int(s * s * 0.004)
    ys, xs = rng.integers(0, s, n), rng.integers(0, s, n)
    tones = rng.uniform(-70, -30, n)
    img[ys, xs] += tones[:, None]
    return img


def _tile(rng: np.random.Generator, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    p = s / rng.integers(3, 5)
    ox, oy = rng.uniform(0, p, 2)
    tile_id = np.floor((x + ox) / p) * 31 + np.floor((y + oy) / p)
    shades = rng.uniform(-0.06, 0.06, 1024).astype(np.float32)
    t = 0.72 + shades[tile_id.astype(np.int64) % 1024] + 0.02 * _smooth_noise(rng, s, 1.0)
    gx, gy = np.mod(x + ox, p), np.mod(y + oy, p)
    grout = (np.minimum(gx, p - gx) < 1.2) | (np.minimum(gy, p - gy) < 1.2)
    t = np.where(grout, 0.25, t)
    return _palette(t, (40, 40, 45), _jitter(rng, (225, 222, 210), 8))


def _cork(rng: np.random.Generator, s: int) -> np.ndarray:
    t = 0.55 + 0.18 * _smooth_noise(rng, s, 1.2) + 0.12 * _smooth_noise(rng, s, 4.0)
    return _palette(t, _jitter(rng, (120, 80, 45), 8), _jitter(rng, (220, 175, 120), 8))


TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "wood": _wood,
    "metal": _metal,
    "fabric": _fabric,
    "plastic": _plastic,
    "tile": _tile,
    "cork": _cork,
}


# ------------------------------------------------------------------ defects (draw + exact mask)


def _thickness(s: int) -> int:
    # Keep defects visible after the model's downsizing (64 px in tests, 224 px for ViT-B/16).
    return max(2, round(s / 64))


def _scratch(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    import cv2

    s = img.shape[0]
    length = rng.uniform(0.3, 0.6) * s
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.3 * s, 0.7 * s, 2)
    bend = rng.uniform(-0.12, 0.12) * s
    ts = np.linspace(-0.5, 0.5, 24)
    xs = cx + ts * length * np.cos(angle) - (1 - 4 * ts**2) * bend * np.sin(angle)
    ys = cy + ts * length * np.sin(angle) + (1 - 4 * ts**2) * bend * np.cos(angle)
    mask = np.zeros((s, s), np.uint8)
    pts = np.stack([xs, ys], 1).round().astype(np.int32)
    cv2.polylines(mask, [pts], False, 1, thickness=_thickness(s), lineType=cv2.LINE_8)
    bright = rng.random() < 0.5
    m = mask.astype(bool)
    img[m] = np.clip(img[m] + (80.0 if bright else -80.0), 0, 255)
    return mask


def _contamination(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    s = img.shape[0]
    r = rng.uniform(0.06, 0.12) * s
    cx, cy = rng.uniform(r + 2, s - r - 2, 2)
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    d = np.hypot((x - cx) / rng.uniform(0.7, 1.3), y - cy) / r
    m = (d + 0.35 * _smooth_noise(rng, s, max(1.5, r / 3))) < 1.0
    if not m.any():
        m = d < 1.0
    stain = np.asarray([(45, 38, 30), (40, 90, 40), (25, 25, 25), (150, 120, 30)][int(rng.integers(0, 4))], np.float32)
    img[m] = img[m] * 0.15 + stain * 0.85
    return m.astype(np.uint8)


def _crack(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    import cv2

    s = img.shape[0]
    mask = np.zeros((s, s), np.uint8)
    step = max(2.0, s / 32)

    def walk(x: float, y: float, heading: float, steps: int) -> list[tuple[float, float, float]]:
        pts = [(x, y, heading)]
        for _ in range(steps):
            heading += rng.normal(0, 0.5)
            x = float(np.clip(x + step * np.cos(heading), 1, s - 2))
            y = float(np.clip(y + step * np.sin(heading), 1, s - 2))
            pts.append((x, y, heading))
        return pts

    x0, y0 = rng.uniform(0.25 * s, 0.75 * s, 2)
    main = walk(x0, y0, rng.uniform(0, 2 * np.pi), int(rng.integers(10, 16)))
    branch_at = main[int(rng.integers(2, len(main) - 2))]
    branch = walk(
        branch_at[0],
        branch_at[1],
        branch_at[2] + rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.2),
        int(rng.integers(4, 8)),
    )
    t = _thickness(s)
    for path, th in ((main, t), (branch, max(1, t - 1))):
        pts = np.asarray([(p[0], p[1]) for p in path]).round().astype(np.int32)
        cv2.polylines(mask, [pts], False, 1, thickness=th, lineType=cv2.LINE_8)
    m = mask.astype(bool)
    img[m] = img[m] * 0.2 + 10.0
    return mask


DEFECT_DRAWERS: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "scratch": _scratch,
    "contamination": _contamination,
    "crack": _crack,
}


# ------------------------------------------------------------------ writer


def synth_image(
    seed: int, category: str, split: str, cls: str, index: int, size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """One (uint8 RGB image, uint8 0/255 mask or None) pair, a pure function of its arguments."""
    key = [seed, list(TEXTURES).index(category), _SPLIT_CODE[split], _CLASS_CODE[cls], index]
    # Separate streams for texture and defect, so the defect-free texture of any image can be
    # regenerated (tests check that a defect changes pixels only inside its mask).
    img = TEXTURES[category](np.random.default_rng([*key, 0]), size).astype(np.float32)
    mask = None
    if cls != "good":
        mask = (DEFECT_DRAWERS[cls](np.random.default_rng([*key, 1]), img) > 0).astype(np.uint8) * 255
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def _write_png(path: Path, array: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    data = array[:, :, ::-1] if array.ndim == 3 else array  # cv2 writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(data))
    if not ok:
        raise DataError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def make_synthetic_dataset(
    out: str | Path, spec: SynthSpec = SynthSpec(), overwrite: bool = False, progress: bool = True
) -> SynthSummary:
    """Write the data set under `out` (MVTec AD layout, one folder per category)."""
    from tqdm import tqdm

    root = Path(out)
    names = list(TEXTURES)[: spec.categories]
    if root.exists() and not root.is_dir():
        raise DataError(f"output exists and is not a folder: {root}")
    existing = [root / n for n in names if (root / n).exists()]
    if existing and not overwrite:
        raise DataError(f"output already holds {existing[0]} (use --overwrite to replace it)")
    for p in existing:
        shutil.rmtree(p)
    summary = SynthSummary(root=root, categories=names)
    jobs = []
    for cat in names:
        jobs += [(cat, "train", "good", i) for i in range(spec.train_good)]
        jobs += [(cat, "test", cls, i) for cls in ("good", *spec.defects) for i in range(spec.per_class)]
    for cat, split, cls, i in tqdm(jobs, desc="synth-data", unit="img", disable=not progress, leave=False):
        img, mask = synth_image(spec.seed, cat, split, cls, i, spec.size)
        path = root / cat / split / cls / f"{i:03d}.png"
        _write_png(path, img)
        summary.files.append(path)
        summary.images += 1
        if mask is not None:
            mpath = root / cat / "ground_truth" / cls / f"{i:03d}_mask.png"
            _write_png(mpath, mask)
            summary.files.append(mpath)
            summary.masks += 1
    info = {
        "generator": "clipinspect synth-data",
        "seed": spec.seed,
        "size": spec.size,
        "categories": names,
        "defects": list(spec.defects),
        "train_good": spec.train_good,
        "per_class": spec.per_class,
    }
    (root / "synth.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %d images and %d masks in %d categories to %s", summary.images, summary.masks, len(names), root)
    return summary
