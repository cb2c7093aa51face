"""Calibration image sets: a reproducible, hashed sample of normal images.

INT8 scales are only as good as the images they were measured on, so the set is part of the
bundle's provenance: the same source, N and seed always give the same ordered list of files,
and `sha256` (over the ordered list of the files' own sha256) is what the manifest records
next to every INT8 artefact. Images go through exactly the device's preprocessing
(`edge_runtime.imageio.read_rgb` + `edge_runtime.preprocess.prepare`), so the calibrated
ranges are those the device will see.

Where normal images come from (`find_normal_images`):
- a CSV file with columns `image_id,label[,description]` (or `path` instead of `image_id`),
  paths relative to the CSV's folder; rows whose label is normal (0 / good / normal / ok) are used;
- an MVTec category folder (`<dir>/train/good`) or an MVTec root (`<dir>/<category>/train/good`);
- otherwise every image under the folder (recursively), taken to be normal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.labelled_csv import image_source, read_labelled_csv
from edge_runtime.bundle import calibration_set_sha256, sha256_file
from edge_runtime.errors import DataError
from edge_runtime.imageio import IMAGE_SUFFIXES, read_rgb
from edge_runtime.preprocess import prepare

SET_FILE = "calibration_set.json"


@dataclass(frozen=True)
class CalibrationSet:
    """An ordered sample of image files, with the hashes that identify it."""

    files: tuple[Path, ...]
    file_sha256: tuple[str, ...]
    source: str
    seed: int
    available: int  # how many normal images the source held

    @property
    def sha256(self) -> str:
        """The set's identity (`set_hash` of the file hashes, in order)."""
        return set_hash(self.file_sha256)

    def __len__(self) -> int:
        return len(self.files)

    def images(
        self,
        size_hw: Sequence[int],
        *,
        color_order: str = "RGB",
        method: str = "area",
    ) -> Iterator[np.ndarray]:
        """Each image as the model sees it: HxWx3 uint8, in the set's order."""
        for path in self.files:
            yield prepare(read_rgb(path), (int(size_hw[0]), int(size_hw[1])), color_order=color_order, method=method)

    def batches(
        self,
        size_hw: Sequence[int],
        batch_size: int = 1,
        *,
        color_order: str = "RGB",
        method: str = "area",
    ) -> Iterator[np.ndarray]:
        """uint8 NHWC batches of at most `batch_size` images (the last one may be smaller)."""
        if batch_size < 1:
            raise DataError(f"calibration batch size must be >= 1, got {batch_size}")
        pending: list[np.ndarray] = []
        for img in self.images(size_hw, color_order=color_order, method=method):
            pending.append(img)
            if len(pending) == batch_size:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the set (written next to the INT8 model in the bundle)."""
        return {
            "sha256": self.sha256,
            "source": self.source,
            "seed": self.seed,
            "num": len(self.files),
            "available": self.available,
            "files": [{"path": _relative(p, self.source), "sha256": h} for p, h in zip(self.files, self.file_sha256)],
        }

    def write(self, path: str | Path) -> Path:
        """Write `describe()` as JSON to `path`.

        Args:
            path: the file to write.

        Returns:
            The path written.
        """
        p = Path(path)
        p.write_text(json.dumps(self.describe(), indent=2) + "\n", encoding="utf-8")
        return p


def set_hash(file_hashes: Sequence[str]) -> str:
    """The calibration set's identity, as the runtime and build-engine define it."""
    return calibration_set_sha256(list(file_hashes))


def find_normal_images(source: str | Path) -> list[Path]:
    """All normal images of `source` (CSV, MVTec category/root, or plain folder), sorted."""
    src, is_csv = image_source(source, "calibration image source")
    if is_csv:
        files = _from_csv(src)
    elif (src / "train" / "good").is_dir():
        files = _images_under(src / "train" / "good")
    else:
        categories = sorted(p for p in src.iterdir() if (p / "train" / "good").is_dir())
        if categories:
            files = [f for c in categories for f in _images_under(c / "train" / "good")]
        else:
            files = _images_under(src)
    if not files:
        raise DataError(f"no normal images found in {src} (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    return sorted(files)


def sample_calibration_set(source: str | Path, num: int, seed: int = 0) -> CalibrationSet:
    """Draw `num` distinct normal images from `source` with `seed`; same inputs -> same set."""
    if num < 1:
        raise DataError(f"number of calibration images must be >= 1, got {num}")
    files = find_normal_images(source)
    if num > len(files):
        raise DataError(
            f"asked for {num} calibration images but {source} holds only {len(files)} normal images; use --num {len(files)} or fewer"
        )
    rng = np.random.default_rng(seed)
    picked = [files[i] for i in rng.permutation(len(files))[:num]]
    return CalibrationSet(
        files=tuple(picked),
        file_sha256=tuple(sha256_file(p) for p in picked),
        source=str(source),
        seed=int(seed),
        available=len(files),
    )


def _relative(path: Path, source: str) -> str:
    """Path as recorded in the bundle: relative to the source (no desktop paths leak)."""
    base = Path(source)
    base = base.parent if base.is_file() else base
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


def _images_under(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]


def _from_csv(path: Path) -> list[Path]:
    return [image for image, label, _ in read_labelled_csv(path) if label == 0]
