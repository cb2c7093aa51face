"""Image-level label CSVs (`image_id` or `path`, `label`) for calibration and precision reports.

Labels are read with the training side's vocabulary (`train.data.parse_label`), so a CSV
means the same thing to `train`, `calibrate` and `precision-report`, and an unknown label is
an error naming the line rather than a silent 'anomalous'.
"""

from __future__ import annotations

import csv
from pathlib import Path

from edge_runtime.errors import DataError
from train.data import parse_label


def image_source(source: str | Path, what: str) -> tuple[Path, bool]:
    """`source` as a path, and whether it is a label CSV (else a folder to search).

    Args:
        source: a folder or a .csv file.
        what: the source's name for messages, e.g. "calibration image source".

    Returns:
        (the path, True for a CSV).

    Raises:
        DataError: it does not exist, or it is a file but not a .csv.
    """
    src = Path(source)
    if not src.exists():
        raise DataError(f"{what} not found: {src}")
    if src.is_file() and src.suffix.lower() != ".csv":
        raise DataError(f"{what} must be a folder or a .csv file: {src}")
    return src, src.is_file()


def read_labelled_csv(path: Path) -> list[tuple[Path, int, str]]:
    """(image file, 0 normal / 1 anomalous, label text) per row; images are looked up next
    to the CSV or in its `images/` folder."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV {path}: {exc}") from None
    if not rows:
        return []
    cols = set(rows[0])
    key = "image_id" if "image_id" in cols else "path" if "path" in cols else None
    if key is None or "label" not in cols:
        raise DataError(
            f"CSV {path} needs columns 'image_id' (or 'path') and 'label', has: {', '.join(sorted(c for c in cols if c))}"
        )
    out = []
    for n, row in enumerate(rows, start=2):
        rel = (row.get(key) or "").strip()
        hit = next((c for c in (path.parent / rel, path.parent / "images" / rel) if c.is_file()), None)
        if hit is None:
            raise DataError(f"CSV {path} line {n}: image '{rel}' not found next to the CSV")
        text = str(row.get("label", "")).strip().lower()
        out.append((hit, parse_label(text, f"CSV {path} line {n}"), text))
    return out
