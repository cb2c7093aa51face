"""Writing a changed copy of a bundle on the device (enroll, few-shot bank, input profile):
stage next to the output, add or replace files, hash them all into the manifest, rename into
place. The desktop's export has its own writer (export/bundle_writer.py) for new bundles."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from edge_runtime.bundle import MANIFEST, Bundle, Manifest, load_bundle, with_file, write_manifest
from edge_runtime.errors import BundleError, ConfigError


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard link, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def replace_file(path: Path) -> Path:
    """Unlink `path` before it is rewritten: it may be a hard link into the source bundle."""
    path.unlink(missing_ok=True)
    return path


class StagedBundle:
    """A copy of a bundle's listed files in a staging folder next to `out` (hard links where
    the file system allows: a model is hundreds of MB, a Jetson's disk is small); files are
    only ever replaced through `path()`, never written in place, so the source stays intact.
    `commit` hashes every file into the manifest and renames the folder into place: all or
    nothing. A signature over the old manifest is left behind on purpose (sign again)."""

    def __init__(self, src: Bundle, out: Path, overwrite: bool = False) -> None:
        self.out = Path(out).absolute()
        if self.out == Path(src.root).absolute():
            raise ConfigError("--out must be a new folder, not the bundle being changed (the original stays as it was)")
        if self.out.exists() and (not self.out.is_dir() or (any(self.out.iterdir()) and not overwrite)):
            raise BundleError(f"output {self.out} already exists; pass --force to replace it")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.staging-"))
        except OSError as exc:
            raise BundleError(f"cannot write {self.out}: {exc.strerror or exc}") from None
        # Only the files the manifest lists: a signature over the old manifest would not
        # match the new one and is left behind on purpose.
        for name in src.manifest.files:
            dst = self.root / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(src.root / name, dst)
        self._done = False

    def path(self, name: str) -> Path:
        if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST:
            raise BundleError(f"bad bundle file name {name!r}")
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return replace_file(p)

    def commit(self, manifest: Manifest) -> Bundle:
        manifest = replace(manifest, files={})
        for name in sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()):
            manifest = with_file(manifest, self.root, name)
        write_manifest(self.root, manifest)
        old = None
        if self.out.exists():
            old = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.old-"))
            os.rmdir(old)
            os.replace(self.out, old)
        os.replace(self.root, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._done = True
        return load_bundle(self.out)

    def __enter__(self) -> "StagedBundle":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._done:
            shutil.rmtree(self.root, ignore_errors=True)


def write_bundle_copy(bundle: Bundle, out_dir: str | Path, edit, overwrite: bool = False) -> Bundle:
    """Copy `bundle` to `out_dir`, let `edit(staging_root, manifest) -> manifest` add files
    (through `replace_file`), and commit (all or nothing)."""
    with StagedBundle(bundle, Path(out_dir), overwrite=overwrite) as stage:
        return stage.commit(edit(stage.root, bundle.manifest))
