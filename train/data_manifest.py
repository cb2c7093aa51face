"""Data-integrity manifests: the sha256 of every image and mask of a data set.

`clipinspect check-data D --write-manifest F` records them; `--verify-manifest F` re-hashes
and refuses any changed, missing or unlisted file. Training writes RUN/data_manifest.json
(the same, plus each image's role: train/val/test) and records the digests in RUN/run.json;
eval refuses evaluation images that training saw, and the bundle's lineage carries the
digests. A digest is `edge_runtime.digest.image_set_sha256` over the images' sha256s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_runtime.bundle import sha256_file
from edge_runtime.digest import image_set_sha256
from edge_runtime.errors import DataError
from train.data import Sample
from train.jsonfile import read_json

FORMAT = "clipinspect.data-manifest"
VERSION = 1
RUN_MANIFEST = "data_manifest.json"


def data_root(data: str | Path) -> Path:
    p = Path(data)
    return p.parent if p.is_file() else p


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def build_manifest(
    data: str | Path,
    samples: Sequence[Sample],
    roles: Mapping[str, Iterable[Sample]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The manifest of `samples` (images + masks), with each image's role when given."""
    from tqdm import tqdm

    root = data_root(data)
    role_of = {s.image_path: r for r, items in (roles or {}).items() for s in items}
    files = []
    cache: dict[Path, str] = {}
    for s in tqdm(samples, desc="hashing images", unit="img", disable=not progress, leave=False):
        entry: dict[str, Any] = {
            "path": _rel(s.image_path, root),
            "sha256": cache.setdefault(s.image_path, sha256_file(s.image_path)),
            "category": s.category,
            "label": s.label,
            "split": s.split,
        }
        if roles is not None:
            entry["role"] = role_of.get(s.image_path, "unused")
        if s.mask_path is not None:
            entry["mask"] = _rel(s.mask_path, root)
            entry["mask_sha256"] = sha256_file(s.mask_path)
        files.append(entry)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "data": str(Path(data).resolve()),
        "images": len(files),
        "sha256": image_set_sha256(f["sha256"] for f in files),
    }
    if roles is not None:
        doc["roles"] = {
            r: {
                "images": sum(1 for f in files if f.get("role") == r),
                "sha256": image_set_sha256(f["sha256"] for f in files if f.get("role") == r),
            }
            for r in roles
        }
    doc["files"] = files
    return doc


def write_manifest(path: str | Path, doc: Mapping[str, Any]) -> Path:
    """Write data manifest `doc` to `path` (parent folders created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return p


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The data manifest at `path`; DataError if missing, unreadable, not one, or from a newer version."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data manifest not found: {p}")
    doc = read_json(p, "data manifest")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), list):
        raise DataError(f"{p} is not a {FORMAT} file")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise DataError(
            f"{p}: data manifest version {doc.get('version')!r} is newer than this clipinspect reads ({VERSION})"
        )
    return doc


def verify_manifest(path: str | Path, data: str | Path, samples: Sequence[Sample]) -> str:
    """Re-hash every image and mask listed in the manifest at `path` against the files under
    `data`; the data set's images must be exactly those listed. Returns the digest."""
    doc = read_manifest(path)
    root = data_root(data)
    listed = {}
    for f in doc["files"]:
        listed[f["path"]] = f
        for key, sha_key in (("path", "sha256"), ("mask", "mask_sha256")):
            if key not in f:
                continue
            p = Path(f[key]) if Path(f[key]).is_absolute() else root / f[key]
            if not p.is_file():
                raise DataError(f"{p}: listed in data manifest {path} but missing")
            if sha256_file(p) != f[sha_key]:
                raise DataError(
                    f"{p}: sha256 differs from data manifest {path} (file changed since the manifest was written)"
                )
    unlisted = [s.image_path for s in samples if _rel(s.image_path, root) not in listed]
    if unlisted:
        raise DataError(
            f"{unlisted[0]}: image not in data manifest {path} ({len(unlisted)} unlisted); write a new manifest"
        )
    return str(doc["sha256"])


def image_hashes(samples: Sequence[Sample]) -> dict[Path, str]:
    """{image path: sha256} of `samples`' images."""
    return {s.image_path: sha256_file(s.image_path) for s in samples}
