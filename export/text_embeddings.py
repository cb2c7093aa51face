"""The [2, D] text embeddings the device multiplies patch features with.

They are computed ONCE on the desktop from the merged text tower (row 0 normal, row 1
abnormal, L2-normalised) and shipped as `text_embeddings.npy`, so the device never runs a
text encoder or a tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import BundleError, DataError


def compute_text_embeddings(model: Any) -> np.ndarray:
    """Run the model's text tower for its prompt pair -> float32 [2, D]."""
    import torch

    with torch.no_grad():
        emb = model.text_embeddings()
    arr = emb.detach().to("cpu", torch.float32).numpy()
    check_text_embeddings(arr, "text embeddings from the merged model")
    return np.ascontiguousarray(arr)


def check_text_embeddings(arr: np.ndarray, where: str) -> None:
    if arr.ndim != 2 or arr.shape[0] != 2 or arr.shape[1] < 1:
        raise DataError(f"{where}: expected shape [2, D] (normal, abnormal), got {list(arr.shape)}")
    if arr.dtype != np.float32:
        raise DataError(f"{where}: expected float32, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: contains NaN or inf")


def save_text_embeddings(path: str | Path, arr: np.ndarray) -> Path:
    path = Path(path)
    check_text_embeddings(arr, str(path))
    with open(path, "wb") as f:  # np.save on a str path would append '.npy' to other suffixes
        np.save(f, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return path


def load_text_embeddings(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"text embeddings file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BundleError(f"cannot read text embeddings {path}: {exc}") from None
    check_text_embeddings(arr, str(path))
    return arr
