"""Data sets for training and evaluation: readers for the layouts we accept, and a torch Dataset.

Accepted layouts (autodetected by `load_samples`):

* MVTec AD layout: ``<category>/train/good/*``, ``<category>/test/<defect>/*`` and
  ``<category>/ground_truth/<defect>/<name>_mask.png``. ``data`` may be one category folder
  or a folder of categories. A category without ``ground_truth/`` is image-level only.
* VisA's original layout: ``<category>/Data/Images/{Normal,Anomaly}/*`` with masks in
  ``<category>/Data/Masks/Anomaly/<stem>.png``; the split comes from
  ``<root>/split_csv/1cls.csv`` when present, otherwise every image is in ``test``.
* AnomalyCLIP meta.json: ``{"train"|"test": {category: [{img_path, mask_path, cls_name,
  specie_name, anomaly}]}}`` with paths relative to the json's folder. ``data`` may be the
  json file or a folder holding ``meta.json``.
* CSV ``image_id,label,description`` (optional columns ``category``, ``split``) with image
  paths relative to the CSV's folder. Image-level labels only: pixel losses and pixel
  metrics are skipped. A row without a split (no ``split`` column, or an empty cell) is
  refused unless the caller asks for ``unsplit="seeded"`` (train/splits.py then assigns it
  train/val/test by seed) or ``unsplit="test"`` (eval of a data set the run never saw), so
  one file cannot silently serve both training and evaluation.

Splits: ``train``, ``val`` (optional: an MVTec ``val/`` folder, a meta.json ``val`` key, a CSV
split ``val``/``validation``) and ``test``. Which images train, choose the threshold/epoch,
or are only reported is decided by `train.splits.plan_splits`.

Every problem is a DataError naming the file. Images go through the same
`edge_runtime.preprocess` functions as on the device, so training and device scores agree.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import DataError
from edge_runtime.imageio import IMAGE_SUFFIXES, read_mask, read_rgb
from edge_runtime.preprocess import normalize, prepare
from train.jsonfile import read_json

log = logging.getLogger(__name__)

NORMAL_LABELS = frozenset({"normal", "good", "ok", "0"})
ANOMALY_LABELS = frozenset({"anomaly", "anomalous", "abnormal", "ng", "defect", "defective", "1"})
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"validation": "val", "valid": "val"}
UNSPLIT = ("error", "seeded", "test")


@dataclass(frozen=True)
class Sample:
    """One image. `label` 0 = normal, 1 = anomalous. `defect` is "good" for normal images.

    `pixel_gt` says whether pixel truth is known for this image: true for an anomalous image
    with a mask and for a normal image of a data set that has masks (its truth is all zeros);
    false for image-level-only data (CSV), where pixel losses/metrics must be skipped.
    """

    image_path: Path
    label: int
    mask_path: Path | None
    category: str
    defect: str
    description: str = ""
    split: str = ""
    pixel_gt: bool = False


def parse_label(text: str, where: str) -> int:
    key = str(text).strip().lower()
    if key in NORMAL_LABELS:
        return 0
    if key in ANOMALY_LABELS:
        return 1
    raise DataError(
        f"{where}: unknown label {text!r} (use one of {', '.join(sorted(NORMAL_LABELS))} "
        f"for normal, {', '.join(sorted(ANOMALY_LABELS))} for anomalous)"
    )


def load_samples(
    data: str | Path,
    splits: Sequence[str] = SPLITS,
    categories: Sequence[str] | None = None,
    unsplit: str = "error",
) -> list[Sample]:
    """Read the samples of `data` (any accepted layout) for `splits` and `categories`.

    `unsplit` says what a CSV row without a split may be: "error" (refused), "seeded" (kept
    with split "" for `train.splits.plan_splits`), "test" (kept as a test image).
    Raises DataError for a missing path, an unknown split or category, an empty class
    folder, a missing mask, an unknown label, or a selection that holds no image.
    """
    root = Path(data)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise DataError(f"unknown split {bad[0]!r} (known: {', '.join(SPLITS)})")
    if not root.exists():
        raise DataError(f"data not found: {root}")
    if unsplit not in UNSPLIT:
        raise DataError(f"unknown unsplit policy {unsplit!r} (known: {', '.join(UNSPLIT)})")
    samples = _read_any(root, tuple(splits))
    samples = _resolve_unsplit(samples, unsplit, root)
    available = sorted({s.category for s in samples})
    if categories:
        missing = [c for c in categories if c not in available]
        if missing:
            raise DataError(f"category {missing[0]!r} not in {root} (available: {', '.join(available) or 'none'})")
        wanted = set(categories)
        samples = [s for s in samples if s.category in wanted]
    if not samples:
        raise DataError(f"no images in {root} for splits {', '.join(splits)}")
    log.info(
        "data %s: %d images (%d anomalous) in %d categories, splits %s",
        root,
        len(samples),
        sum(s.label for s in samples),
        len({s.category for s in samples}),
        ",".join(splits),
    )
    return samples


def _resolve_unsplit(samples: list[Sample], unsplit: str, root: Path) -> list[Sample]:
    loose = [s for s in samples if not s.split]
    if not loose:
        return samples
    if unsplit == "error":
        raise DataError(
            f"{root}: {len(loose)} rows have no split (e.g. {loose[0].image_path.name}), so the same images would "
            "serve training and evaluation; add a 'split' column (train/val/test), or choose explicitly: "
            "train --set data.unsplit=seeded (seeded train/val/test assignment) or eval --unseen (every row is a test image)"
        )
    if unsplit == "test":
        return [replace(s, split="test") if not s.split else s for s in samples]
    return samples


def _read_any(root: Path, splits: tuple[str, ...]) -> list[Sample]:
    if root.is_file():
        if root.suffix.lower() == ".json":
            return read_meta_json(root, splits)
        if root.suffix.lower() == ".csv":
            return read_csv(root, splits)
        raise DataError(f"cannot read data set {root}: expected a folder, a meta.json or a .csv file")
    if (root / "meta.json").is_file():
        return read_meta_json(root / "meta.json", splits)
    if _is_mvtec_category(root) or _is_visa_category(root):
        return _read_category(root, root.name, splits, split_csv=root.parent / "split_csv" / "1cls.csv")
    cats = sorted(p for p in root.iterdir() if p.is_dir() and (_is_mvtec_category(p) or _is_visa_category(p)))
    if cats:
        out: list[Sample] = []
        for cat in cats:
            out.extend(_read_category(cat, cat.name, splits, split_csv=root / "split_csv" / "1cls.csv"))
        return out
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) == 1:
        return read_csv(csvs[0], splits)
    raise DataError(
        f"cannot recognise the data set layout of {root}: expected <category>/train/good and "
        f"<category>/test/<defect> folders (MVTec AD), <category>/Data/Images (VisA), a meta.json, "
        f"or one CSV file image_id,label,description"
    )


def _is_mvtec_category(p: Path) -> bool:
    return (p / "train").is_dir() or (p / "test").is_dir()


def _is_visa_category(p: Path) -> bool:
    return (p / "Data" / "Images").is_dir()


def _read_category(cat_dir: Path, category: str, splits: tuple[str, ...], split_csv: Path) -> list[Sample]:
    if _is_visa_category(cat_dir) and not _is_mvtec_category(cat_dir):
        return read_visa_category(cat_dir, category, splits, split_csv)
    return read_mvtec_category(cat_dir, category, splits)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_mvtec_category(cat_dir: Path, category: str, splits: Sequence[str] = SPLITS) -> list[Sample]:
    """One MVTec AD category folder. Class folders must not be empty; masks must exist for
    every defective image when the category has a ``ground_truth`` folder."""
    gt_root = cat_dir / "ground_truth"
    has_gt = gt_root.is_dir()
    out: list[Sample] = []
    for split in splits:
        split_dir = cat_dir / split
        if not split_dir.is_dir():
            if split == "val":
                continue  # a validation folder is optional: plan_splits carves one from train
            if split == "train" and (cat_dir / "test").is_dir():
                continue  # test-only categories are common for zero-shot evaluation
            if split == "test" and (cat_dir / "train").is_dir():
                continue
            raise DataError(f"missing folder {split_dir}")
        if split == "train" and not (split_dir / "good").is_dir():
            raise DataError(f"missing folder {split_dir / 'good'} (MVTec layout: train/good holds normal images)")
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
        if not class_dirs:
            raise DataError(f"no class folders in {split_dir} (expected good/ and <defect>/ folders)")
        for cls_dir in class_dirs:
            images = _images_in(cls_dir)
            if not images:
                raise DataError(f"empty class folder (no images): {cls_dir}")
            defect = cls_dir.name
            label = 0 if defect == "good" else 1
            if split == "train" and label:
                log.debug("anomalous images in train split of %s: %s", category, cls_dir)
            for img in images:
                mask = None
                if label and has_gt:
                    mask = gt_root / defect / f"{img.stem}_mask.png"
                    if not mask.is_file():
                        raise DataError(f"mask not found for {img}: expected {mask}")
                out.append(Sample(img, label, mask, category, defect, split=split, pixel_gt=has_gt))
    if not out and splits:
        raise DataError(f"no images in category folder {cat_dir} for splits {', '.join(splits)}")
    return out


def read_visa_category(cat_dir: Path, category: str, splits: Sequence[str], split_csv: Path) -> list[Sample]:
    """VisA's original layout. Without VisA's split_csv/1cls.csv every image is in 'test'."""
    img_root = cat_dir / "Data" / "Images"
    # VisA's split_csv/1cls.csv: object,split,label,image,mask with paths relative to the
    # VisA root (the folder holding split_csv/). Normal and Anomaly reuse file names, so key
    # by the relative path.
    split_of: dict[str, str] = {}
    if split_csv.is_file():
        for row in _csv_rows(split_csv)[1]:
            if row.get("object") == category and row.get("image"):
                split_of[Path(row["image"].strip()).as_posix()] = str(row.get("split", "test")).strip()
    visa_root = split_csv.parent.parent
    out: list[Sample] = []
    for sub, label in (("Normal", 0), ("Anomaly", 1)):
        folder = img_root / sub
        if not folder.is_dir():
            raise DataError(f"missing folder {folder}")
        images = _images_in(folder)
        if not images:
            raise DataError(f"empty class folder (no images): {folder}")
        for img in images:
            split = split_of.get(img.relative_to(visa_root).as_posix(), "test") if split_of else "test"
            if split not in splits:
                continue
            mask = None
            if label:
                mask = cat_dir / "Data" / "Masks" / "Anomaly" / f"{img.stem}.png"
                if not mask.is_file():
                    raise DataError(f"mask not found for {img}: expected {mask}")
            out.append(
                Sample(img, label, mask, category, "good" if label == 0 else "anomaly", split=split, pixel_gt=True)
            )
    return out


def read_meta_json(path: Path, splits: Sequence[str] = SPLITS) -> list[Sample]:
    """AnomalyCLIP-style meta.json; paths are relative to the json's folder."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected an object with 'train'/'test' keys")
    root = path.parent
    out: list[Sample] = []
    for split in splits:
        per_cat = meta.get(split)
        if per_cat is None:
            continue
        if not isinstance(per_cat, dict):
            raise DataError(f"{path}: '{split}' must map category -> list of images")
        for category, items in per_cat.items():
            if not items:
                raise DataError(f"{path}: category {category!r} in '{split}' has no images")
            for i, item in enumerate(items):
                where = f"{path} [{split}][{category}][{i}]"
                if not isinstance(item, dict) or "img_path" not in item:
                    raise DataError(f"{where}: entry needs 'img_path'")
                img = root / str(item["img_path"])
                if not img.is_file():
                    raise DataError(f"{where}: image not found: {img}")
                label = parse_label(str(item.get("anomaly", 0)), where)
                mask = None
                if item.get("mask_path"):
                    mask = root / str(item["mask_path"])
                    if not mask.is_file():
                        raise DataError(f"{where}: mask not found: {mask}")
                defect = str(item.get("specie_name") or ("good" if label == 0 else "anomaly"))
                pixel_gt = mask is not None or label == 0
                out.append(
                    Sample(
                        img, label, mask, str(item.get("cls_name", category)), defect, split=split, pixel_gt=pixel_gt
                    )
                )
    return out


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = [f.strip() for f in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    # Header cells may carry spaces ("image_id, label"); key rows by the stripped names.
    rows = [{(k or "").strip(): v for k, v in row.items()} for row in rows]
    return fields, rows


def read_csv(path: Path, splits: Sequence[str] = SPLITS) -> list[Sample]:
    """CSV `image_id,label,description` (+ optional category, split). Image-level only."""
    fields, rows = _csv_rows(path)
    if not rows:
        raise DataError(f"{path}: no rows (expected header image_id,label,description)")
    for col in ("image_id", "label"):
        if col not in fields:
            raise DataError(f"{path}: missing column {col!r} (found: {', '.join(fields)})")
    root = path.parent
    out: list[Sample] = []
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        label = parse_label(row.get("label") or "", where)
        image_id = (row.get("image_id") or "").strip()
        if not image_id:
            raise DataError(f"{where}: empty image_id")
        img = _resolve_image(root, image_id)
        if img is None:
            raise DataError(f"{where}: image not found: {root / image_id}")
        split = (row.get("split") or "").strip().lower()
        split = SPLIT_ALIASES.get(split, split)
        if split and split not in SPLITS:
            raise DataError(f"{where}: unknown split {split!r} (known: {', '.join(SPLITS)})")
        if split and split not in splits:
            continue
        category = (row.get("category") or "").strip() or root.name
        out.append(
            Sample(
                img,
                label,
                None,
                category,
                "good" if label == 0 else "anomaly",
                description=(row.get("description") or "").strip(),
                split=split,
                pixel_gt=False,
            )
        )
    return out


def _resolve_image(root: Path, image_id: str) -> Path | None:
    p = root / image_id
    if p.is_file():
        return p
    if not p.suffix:  # ids are often file stems
        for suffix in IMAGE_SUFFIXES:
            if p.with_suffix(suffix).is_file():
                return p.with_suffix(suffix)
    return None


def load_mask(sample: Sample, image_shape_hw: tuple[int, int]) -> np.ndarray:
    """Full-resolution bool mask of `sample` (all False when it has none); checks its size."""
    if sample.mask_path is None:
        return np.zeros(image_shape_hw, dtype=bool)
    m = read_mask(sample.mask_path)
    if m.shape != tuple(image_shape_hw):
        raise DataError(
            f"mask size {m.shape[1]}x{m.shape[0]} does not match image size "
            f"{image_shape_hw[1]}x{image_shape_hw[0]}: {sample.mask_path} (image {sample.image_path})"
        )
    return m


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool/0-1 mask to (H, W): keeps it strictly binary."""
    import cv2

    m = mask.astype(np.uint8)
    if m.shape == tuple(size_hw):
        return m.astype(np.float32)
    return cv2.resize(m, (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_NEAREST).astype(np.float32)


def load_prepared(sample: Sample, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 HxWx3 model-size image, float32 HxW model-size mask) for one sample."""
    rgb = read_rgb(sample.image_path)
    mask = load_mask(sample, rgb.shape[:2])
    return prepare(rgb, image_size), resize_mask(mask, image_size)


def category_counts(samples: Iterable[Sample]) -> dict[str, tuple[int, int]]:
    """{category: (normal, anomalous)} for logs and summaries."""
    out: dict[str, list[int]] = {}
    for s in samples:
        out.setdefault(s.category, [0, 0])[s.label] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


class AnomalyDataset:
    """Map-style torch data set over samples (torch's DataLoader needs only __len__ and
    __getitem__, so this module imports torch only when an item is built). Items are dicts:
    pixel_values [3,H,W] float32 (normalised), label int64, mask [H,W] float32 (zeros when
    none), has_mask bool (pixel truth known), index int (position in `samples`).

    Images are prepared with `edge_runtime.preprocess.prepare` (straight resize to the model
    size) and `normalize`, exactly as the device does; masks use nearest-neighbour resizing.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: tuple[int, int] | int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if not samples:
            raise DataError("data set has no samples")
        self.samples = list(samples)
        self.image_size = (
            (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        )
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __len__(self) -> int:
        return len(self.samples)

    def image_uint8(self, index: int) -> np.ndarray:
        """The model-size uint8 RGB image of item `index` (for heatmap overlays)."""
        return load_prepared(self.samples[index], self.image_size)[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        s = self.samples[index]
        rgb = read_rgb(s.image_path)
        mask = resize_mask(load_mask(s, rgb.shape[:2]), self.image_size)
        img = prepare(rgb, self.image_size)
        pixel = normalize(img[None], self.mean, self.std)[0]
        return {
            "orig_hw": torch.tensor(rgb.shape[:2], dtype=torch.int64),  # for metrics at the mask's own resolution
            "pixel_values": torch.from_numpy(pixel),
            "label": torch.tensor(s.label, dtype=torch.int64),
            "mask": torch.from_numpy(mask),
            "has_mask": torch.tensor(bool(s.pixel_gt)),
            "index": index,
        }


def check_samples(samples: Sequence[Sample], progress: bool = True) -> None:
    """Decode every image and mask and check their sizes agree; the first problem raises a
    DataError naming the file. Run it before a long training so bad files fail fast."""
    from tqdm import tqdm

    for s in tqdm(samples, desc="checking images", unit="img", disable=not progress, leave=False):
        rgb = read_rgb(s.image_path)
        load_mask(s, rgb.shape[:2])
