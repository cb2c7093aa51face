"""The identity of a set of images: sha256 over the sorted sha256s of the files.

Used for the data a threshold was chosen on (threshold.json, the bundle's threshold), the
images a station enrolled with, and the training data lineage (check-data manifests). Sorted,
so the order in which a folder lists its files does not matter, and file names do not count:
a renamed image is the same image, an edited one is not. (Calibration sets keep their own,
ordered hash: `edge_runtime.bundle.calibration_set_sha256`.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from edge_runtime.bundle import sha256_file


def image_set_sha256(file_sha256s: Iterable[str]) -> str:
    """sha256 over the sorted hex digests, one per line."""
    h = hashlib.sha256()
    for digest in sorted(file_sha256s):
        h.update(digest.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


def hash_files(paths: Iterable[str | Path]) -> list[str]:
    """sha256 of each file, in order."""
    return [sha256_file(p) for p in paths]
