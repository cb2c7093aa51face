"""Writing a bundle folder (the write side of `edge_runtime.bundle`).

A bundle appears all at once or not at all: files are written into a staging folder next to
the target, hashed into the manifest, and the folder is renamed into place. A half-written
export therefore never looks like a bundle to the device or to `bundle sync`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from edge_runtime.bundle import (
    MANIFEST,
    SCHEMA,
    SCHEMA_VERSION,
    Bundle,
    Manifest,
    PreprocessSpec,
    TensorSpec,
    TextSpec,
    Threshold,
    load_bundle,
    with_file,
    write_manifest,
)
from edge_runtime.errors import BundleError

log = logging.getLogger(__name__)

# Distribution names whose versions go into every manifest (what produced the bundle).
_VERSIONED = ("torch", "transformers", "peft", "onnx", "onnxruntime", "onnxscript", "clipinspect")


def library_versions() -> dict[str, str]:
    versions = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def prompts_mapping(prompts: Any) -> dict[str, str]:
    """The prompt pair as the manifest stores it: {'normal': ..., 'abnormal': ...}."""
    if isinstance(prompts, Mapping):
        out = {str(k): str(v) for k, v in prompts.items()}
    elif isinstance(prompts, (list, tuple)) and len(prompts) == 2:
        out = {"normal": str(prompts[0]), "abnormal": str(prompts[1])}
    else:
        raise BundleError(f"prompts must be a normal/abnormal pair, got {prompts!r}")
    if not {"normal", "abnormal"} <= set(out):
        raise BundleError(f"prompts need 'normal' and 'abnormal' entries, got keys {sorted(out)}")
    return out


def make_manifest(
    *,
    model_id: str,
    clip_source: str,
    preprocess: PreprocessSpec,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    threshold: Threshold,
    prompts: Any,
    baked_text: bool,
    opset: int,
    model_file: str = "model.onnx",
    embeddings_file: str = "text_embeddings.npy",
    extra: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> Manifest:
    """A manifest with no files hashed yet (BundleWriter.commit hashes what it staged)."""
    return Manifest(
        schema=SCHEMA,
        schema_version=SCHEMA_VERSION,
        model_id=model_id,
        clip_source=clip_source,
        preprocess=preprocess,
        inputs=inputs,
        outputs=outputs,
        threshold=threshold,
        # The .npy is shipped even when baked: it documents what the graph holds and lets the
        # torch reference and calibration reuse it; the runtime then does not feed it.
        text=TextSpec(prompts=prompts_mapping(prompts), embeddings_file=None if baked_text else embeddings_file, baked=baked_text),
        files={},
        model_file=model_file,
        opset=opset,
        versions=library_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
        lineage=dict(lineage or {}),
    )


class BundleWriter:
    """Stage files for a bundle, then `commit(manifest)` to hash them and swap the folder in.

    with BundleWriter(out, overwrite=args.force) as w:
        export_to(w.path("model.onnx")); save(w.path("text_embeddings.npy"))
        bundle = w.commit(manifest)
    """

    def __init__(self, out_dir: str | Path, *, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise BundleError(f"bundle output {self.out_dir} exists and is not a folder")
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()) and not overwrite:
            raise BundleError(f"bundle output {self.out_dir} already exists and is not empty; pass --force to replace it")
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(dir=self.out_dir.parent, prefix=f".{self.out_dir.name}.staging-"))
        except OSError as exc:
            raise BundleError(f"cannot write bundle to {self.out_dir}: {exc.strerror or exc}") from None
        self._committed = False

    def path(self, name: str) -> Path:
        if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST:
            raise BundleError(f"bad bundle file name {name!r}")
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self, manifest: Manifest) -> Bundle:
        """Hash every staged file into the manifest, write it, move the folder into place,
        and re-load it through the runtime's own checks."""
        staged = sorted(p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*") if p.is_file())
        manifest = replace(manifest, files={})
        for name in staged:
            manifest = with_file(manifest, self.staging, name)
        write_manifest(self.staging, manifest)
        self._swap_in()
        self._committed = True
        bundle = load_bundle(self.out_dir)
        log.info("bundle written: %s (manifest sha256 %s)", self.out_dir, bundle.manifest_sha256[:12])
        return bundle

    def _swap_in(self) -> None:
        old = None
        if self.out_dir.exists():
            # rename (not delete) first: the target is never missing a manifest for long,
            # and a failure here leaves the old bundle recoverable.
            old = Path(tempfile.mkdtemp(dir=self.out_dir.parent, prefix=f".{self.out_dir.name}.old-"))
            os.rmdir(old)
            os.replace(self.out_dir, old)
        os.replace(self.staging, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.abort()
