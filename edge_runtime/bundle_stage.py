"""Writing a changed copy of a bundle on the device (enroll, few-shot bank, input profile):
stage next to the output, add or replace files, hash them all into the manifest, rename into
place. The desktop's export writes new bundles through the same BundleStage."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from edge_runtime.bundle import MANIFEST, Bundle, Manifest, load_bundle, with_file, write_manifest
from edge_runtime.errors import BundleError, ConfigError

log = logging.getLogger(__name__)


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard link `src` to `dst`, else copy it (another file system, or links not allowed).

    A link costs no disk, which matters for a model of hundreds of MB on a Jetson; callers
    must then replace, never rewrite, `dst` (see `replace_file`).
    """
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def replace_file(path: Path) -> Path:
    """Unlink `path` before it is rewritten: it may be a hard link into the source bundle."""
    path.unlink(missing_ok=True)
    return path


class BundleStage:
    """Stage files for a bundle next to `out_dir`, then `commit(manifest)` hashes every staged
    file into the manifest, writes it and swaps the folder into place: all or nothing.

    with BundleStage(out, overwrite=args.force) as w:
        export_to(w.path("model.onnx")); save(w.path("text_embeddings.npy"))
        bundle = w.commit(manifest)

    Leaving the `with` block without `commit` removes the staging folder; `out_dir` is
    untouched until `commit` swaps it.

    Args:
        out_dir: the bundle folder to create or replace.
        overwrite: replace a non-empty `out_dir` (the CLI's `--force`).

    Raises:
        BundleError: `out_dir` is a file, is non-empty without `overwrite`, or its parent
            cannot be written.
    """

    def __init__(self, out_dir: str | Path, *, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).absolute()
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise BundleError(f"bundle output {self.out_dir} exists and is not a folder")
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()) and not overwrite:
            raise BundleError(
                f"bundle output {self.out_dir} already exists and is not empty; pass --force to replace it"
            )
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(dir=self.out_dir.parent, prefix=f".{self.out_dir.name}.staging-"))
        except OSError as exc:
            raise BundleError(f"cannot write bundle to {self.out_dir}: {exc.strerror or exc}") from None
        self._committed = False

    def path(self, name: str) -> Path:
        """Where to write bundle file `name` (replaced, never written in place)."""
        if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST:
            raise BundleError(f"bad bundle file name {name!r}")
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return replace_file(p)

    def commit(self, manifest: Manifest) -> Bundle:
        """Hash every staged file into the manifest, write it, move the folder into place,
        and re-load it through the runtime's own checks.

        Args:
            manifest: the new bundle's manifest; its `files` is rebuilt from what is staged.

        Returns:
            The bundle as `load_bundle` reads it from `out_dir`.

        Raises:
            BundleError: the written bundle fails its own load checks (e.g. a referenced
                file was never staged).
        """
        staged = sorted(p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*") if p.is_file())
        manifest = replace(manifest, files={})
        for name in staged:
            manifest = with_file(manifest, self.staging, name)
        write_manifest(self.staging, manifest)
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
        self._committed = True
        # Every file was hashed from these bytes a moment ago (with_file above): reading them all
        # again would double the I/O of a large model or engine; the manifest and references are
        # still checked.
        bundle = load_bundle(self.out_dir, verify=False)
        log.info("bundle written: %s (manifest sha256 %s)", self.out_dir, bundle.manifest_sha256[:12])
        return bundle

    def abort(self) -> None:
        """Remove the staging folder unless committed; safe to call more than once."""
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> BundleStage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class StagedBundle(BundleStage):
    """A BundleStage that starts as a copy of `src`'s listed files (hard links where the file
    system allows: a model is hundreds of MB, a Jetson's disk is small; `path()` replaces a
    file, never writes it in place, so the source stays intact). A signature over the old
    manifest is not copied on purpose: the changed bundle must be signed again."""

    def __init__(self, src: Bundle, out: Path, overwrite: bool = False) -> None:
        if Path(out).absolute() == Path(src.root).absolute():
            raise ConfigError("--out must be a new folder, not the bundle being changed (the original stays as it was)")
        super().__init__(out, overwrite=overwrite)
        for name in src.manifest.files:
            dst = self.staging / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(src.root / name, dst)


def write_bundle_copy(bundle: Bundle, out_dir: str | Path, edit, overwrite: bool = False) -> Bundle:
    """Copy `bundle` to `out_dir`, let `edit(staging_root, manifest) -> manifest` add files
    (through `replace_file`), and commit (all or nothing)."""
    with StagedBundle(bundle, Path(out_dir), overwrite=overwrite) as stage:
        return stage.commit(edit(stage.staging, bundle.manifest))
