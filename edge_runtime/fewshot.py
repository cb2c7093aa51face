"""Few-shot enrolment on the device: a memory bank of good images' patch features.

A bundle exported with `--bank-shots N` has a `memory_bank` input [L, N*P, D] and a
`patch_features` output [B, L, P, D]. Enrolment runs K (1..N) good images through the
bundle's own backend (no torch), stacks their patch features per layer into the bank and
repeats rows to fill the fixed input (the graph takes the max cosine similarity over rows,
so repeated rows change nothing; a fixed shape keeps TensorRT engines static). The bank is
saved as `memory_bank.npy` in a new bundle; the engine is not rebuilt. An all-zero bank
(what the runtime feeds before enrolment) gives exactly the zero-shot result.

    python -m edge_runtime.fewshot --bundle B --images good/ --shots 4 --out B2
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import Bundle, Manifest, calibration_set_sha256, load_bundle, sha256_file, with_file
from edge_runtime.bundle_stage import replace_file, write_bundle_copy
from edge_runtime.errors import BundleError, ClipInspectError, ConfigError, DataError
from edge_runtime.imageio import find_images

log = logging.getLogger(__name__)

BANK_FILE = "memory_bank.npy"
BANK_INPUT = "memory_bank"
FEATURES_OUTPUT = "patch_features"


def bank_from_features(features: np.ndarray, max_shots: int) -> np.ndarray:
    """[K, L, P, D] patch features of K good images -> the [L, max_shots*P, D] bank input,
    rows of the K images first, then repeated cyclically to fill (max over rows unchanged)."""
    if features.ndim != 4:
        raise DataError(f"patch features must be [K, L, P, D], got shape {list(features.shape)}")
    k, layers, patches, dim = features.shape
    if not 1 <= k <= max_shots:
        raise ConfigError(f"{k} shots do not fit a bank for 1..{max_shots} images")
    rows = np.ascontiguousarray(features.transpose(1, 0, 2, 3).reshape(layers, k * patches, dim), np.float32)
    idx = np.arange(max_shots * patches) % (k * patches)
    return np.ascontiguousarray(rows[:, idx, :])


def list_good_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder` or below it (sorted); masks and ground_truth skipped."""
    return find_images(folder, skip_masks=True)


def draw_shots(images: Sequence[Path], shots: int, seed: int = 0) -> list[Path]:
    """`shots` distinct images drawn with `seed` (numpy default_rng, no replacement), in draw order."""
    if not 1 <= shots <= len(images):
        raise ConfigError(f"--shots {shots}: need 1..{len(images)} (the number of good images given)")
    pick = np.random.default_rng(seed).choice(len(images), size=shots, replace=False)
    return [images[int(i)] for i in pick]


def model_input(bundle: Bundle, path: str | Path) -> np.ndarray:
    """One image file as the bundle's `image` input [1, ...] (the device's own preprocessing;
    the camera's raw frame for raw-frame bundles): edge_runtime.file_input."""
    from edge_runtime.file_input import model_input as file_model_input

    return file_model_input(path, bundle.manifest.preprocess)


def build_bank(backend: Any, bundle: Bundle, images: Sequence[str | Path], shots: int | None = None) -> np.ndarray:
    """Run the first `shots` (default: all) of `images` through `backend` (loaded with
    `bundle`, with a `patch_features` method) and return the [L, max_shots*P, D] bank."""
    spec = bundle.manifest.fewshot
    if spec is None:
        raise BundleError(
            f"bundle {bundle.root} has no memory_bank input; export it with --bank-shots K to enrol good images"
        )
    if not hasattr(backend, "patch_features"):
        raise BundleError(
            f"backend {getattr(backend, 'name', backend)!r} cannot return patch features; use ort-cpu, ort-cuda, trt or torch"
        )
    chosen = list(images)[: shots or len(images)]
    if not 1 <= len(chosen) <= spec.max_shots:
        raise ConfigError(f"--shots {len(chosen)}: this bundle's bank holds 1..{spec.max_shots} images")
    feats = [np.asarray(backend.patch_features(model_input(bundle, p)), np.float32)[0] for p in chosen]
    stacked = np.stack(feats)
    want = (spec.layers, spec.patches, spec.dim)
    if stacked.shape[1:] != want:
        raise BundleError(f"backend returned patch features {list(stacked.shape[1:])}, the manifest says {list(want)}")
    return bank_from_features(stacked, spec.max_shots)


def enrol_shots(
    backend: Any, bundle: Bundle, images: Sequence[Path], shots: int, seed: int = 0
) -> tuple[np.ndarray, list[Path], list[Path]]:
    """For `enroll --shots K`: draw K of `images` with `seed`, build the bank with `backend`,
    make the backend use it (`set_memory_bank`) and return (bank, the shots, the other images).

    Choose a threshold from the OTHER images only, scored after this call: the bank's own
    images have few-shot distance 0 everywhere, so their scores are optimistically low.

    Raises:
        ConfigError: `shots` is not between 1 and the number of images.
        BundleError: the backend cannot take a bank, or its features do not fit the manifest.
    """
    chosen = draw_shots(list(images), shots, seed)
    # Before the shots go through the model: a plug-in backend without banks is refused at once.
    if not hasattr(backend, "set_memory_bank"):
        raise BundleError(
            f"backend {getattr(backend, 'name', backend)!r} cannot switch memory banks; use ort-cpu, ort-cuda, trt or torch"
        )
    bank = build_bank(backend, bundle, chosen)
    backend.set_memory_bank(bank)
    picked = set(chosen)
    return bank, chosen, [p for p in images if p not in picked]


def images_digest(paths: Sequence[str | Path]) -> str:
    """sha256 over the images' file sha256s in enrolment order (names do not count): the same
    ordered identity as a calibration set's (`bundle.calibration_set_sha256`)."""
    return calibration_set_sha256([sha256_file(p) for p in paths])


def save_bank(root: str | Path, manifest: Manifest, bank: np.ndarray, images: Sequence[str | Path]) -> Manifest:
    """Write `bank` as memory_bank.npy into bundle folder `root` and return the manifest
    recording it (file hashed, shots, image digest). The caller writes the manifest.

    Raises:
        BundleError: the bundle has no memory_bank input, or `bank` has another shape.
    """
    spec = manifest.fewshot
    if spec is None:
        raise BundleError("bundle has no memory_bank input; export it with --bank-shots K")
    shape = (spec.layers, spec.max_shots * spec.patches, spec.dim)
    if bank.shape != shape:
        raise BundleError(f"memory bank shape {list(bank.shape)} does not fit the graph's input {list(shape)}")
    np.save(replace_file(Path(root) / BANK_FILE), np.ascontiguousarray(bank, np.float32), allow_pickle=False)
    new = replace(
        spec,
        bank_file=BANK_FILE,
        shots=len(images),
        images_sha256=images_digest(images),
        images=tuple(Path(p).name for p in images),
        enrolled_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return with_file(replace(manifest, fewshot=new), root, BANK_FILE)


def main(argv: Sequence[str] | None = None) -> int:
    """Enrol K good images into a bundle's memory bank (and its input profile) from the shell."""
    p = argparse.ArgumentParser(prog="python -m edge_runtime.fewshot", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--images", required=True, help="folder of good images")
    p.add_argument(
        "--shots", type=int, required=True, help="how many good images go into the bank (1..the bundle's max)"
    )
    p.add_argument("--seed", type=int, default=0, help="which images are drawn from the folder (default 0)")
    p.add_argument("--out", required=True, help="new bundle folder")
    p.add_argument("--backend", default="ort-cpu")
    p.add_argument(
        "--no-input-profile", action="store_true", help="do not also store the input profile of ALL the images"
    )
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _enrol(args)
    except ClipInspectError as exc:
        print(f"fewshot: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _enrol(args: argparse.Namespace) -> int:
    from edge_runtime.backends import make_backend
    from edge_runtime.input_alarm import profile_from_images, save_profile

    bundle = load_bundle(args.bundle)
    images = list_good_images(args.images)
    draw_shots(images, args.shots, args.seed)  # a bad --shots fails before the model loads
    backend = make_backend(args.backend)
    backend.load(bundle, "fp32")
    try:
        bank, chosen, _ = enrol_shots(backend, bundle, images, args.shots, args.seed)
    finally:
        backend.close()
    profile = None if args.no_input_profile else profile_from_images(images, preprocess=bundle.manifest.preprocess)

    def edit(root: Path, manifest: Manifest) -> Manifest:
        manifest = save_bank(root, manifest, bank, chosen)
        return manifest if profile is None else save_profile(root, manifest, profile)

    out = write_bundle_copy(bundle, args.out, edit, overwrite=args.force)
    print(f"enrolled {len(chosen)} shot(s) (seed {args.seed}) into {out.root}: {', '.join(p.name for p in chosen)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
