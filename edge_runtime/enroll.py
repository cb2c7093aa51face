"""Station enrollment: score good parts through a bundle's own backend and write a new bundle.

`enroll_bundle` loads the bundle (hashes checked), scores every good image exactly as `run`
would (same preprocessing function, same backend and precision), then runs the enrollment
steps in order. Each step may add files to the staged copy of the bundle and returns the
updated manifest; the few-shot bank and input-profile steps (when asked for) run first,
then the threshold step, then any `extra_steps`. Another option of `enroll` adds a step:
`EnrollStep(name, apply)` with
`apply(ctx, stage, manifest) -> manifest`, where `stage.path(name)` gives a file to write.
The copy is committed all at once (staging folder renamed into place) with every file
re-hashed, so a half-written enrollment never looks like a bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import Bundle, Manifest, Threshold, load_bundle, sha256_file
from edge_runtime.bundle_stage import StagedBundle
from edge_runtime.digest import image_set_sha256
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.imageio import find_images
from edge_runtime.thresholds import FrrThreshold, frr_threshold

log = logging.getLogger(__name__)

SCORES_FILE = "enrollment.json"


def score_images(bundle: Bundle, backend: Any, paths: Sequence[Path], batch_size: int = 8) -> np.ndarray:
    """Image scores of `paths` through `backend`, preprocessed as `run` does: each file becomes
    the camera image a station with this bundle sees (the raw frame for raw-frame bundles,
    edge_runtime.file_input.image_frame) and goes through the run's own preprocessor."""
    from edge_runtime.file_input import image_frame
    from edge_runtime.frames import Frame
    from edge_runtime.pipeline import make_preprocessor

    first = bundle.manifest.input("image").shape[0] if bundle.manifest.inputs else "batch"
    batch = int(first) if isinstance(first, int) else max(1, int(batch_size))
    preprocess = make_preprocessor(bundle)
    out = np.zeros(len(paths), np.float64)
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        items = []
        for i, p in enumerate(chunk):
            pixels, fmt = image_frame(p, bundle.manifest.preprocess)
            items.append(preprocess(Frame(pixels, 0, start + i, "enroll", {"pixel_format": fmt})))
        while len(items) < batch and isinstance(first, int):  # a static batch is padded, the padding discarded
            items.append(items[-1])
        scores = np.asarray(backend.infer(np.stack(items)).score, np.float64).reshape(-1)
        out[start : start + len(chunk)] = scores[: len(chunk)]
    return out


@dataclass
class EnrollContext:
    """What the steps share: the source bundle, the backend that scored, the images."""

    bundle: Bundle
    backend: Any
    backend_info: dict[str, Any]
    images: list[Path]
    image_sha256: list[str]
    scores: np.ndarray
    options: EnrollOptions
    results: dict[str, Any] = field(default_factory=dict)  # step name -> what it decided

    @property
    def images_sha256(self) -> str:
        """The identity of the scored image set (edge_runtime.digest.image_set_sha256), recorded in the threshold's lineage."""
        return image_set_sha256(self.image_sha256)


@dataclass(frozen=True)
class EnrollOptions:
    """What `clipinspect enroll` was asked for (its flags, validated by `enroll_bundle`).

    Attributes:
        target_frr: the false-reject rate the threshold must certify, in (0, 1).
        confidence: the confidence of that bound (edge_runtime.thresholds).
        margin: added to the chosen threshold (>= 0).
        best_effort: with too few images, take the best bound they allow instead of refusing.
        backend, precision, batch_size: how to score, as `run` would on this station.
        overwrite: replace a non-empty output folder.
        shots: images to put in the few-shot bank (0: none); needs a `memory_bank` input.
        shot_seed: seed for drawing the bank's images.
        input_profile: store the good images' input statistics for the input alarm.
    """

    target_frr: float
    confidence: float = 0.95
    margin: float = 0.0
    best_effort: bool = False
    backend: str = "ort-cpu"
    precision: str = "fp32"
    batch_size: int = 8
    overwrite: bool = False
    shots: int = 0  # few-shot bank of this many good images (the bundle must have a memory_bank input)
    shot_seed: int = 0
    input_profile: bool = True  # store the good images' input statistics for the input alarm


@dataclass(frozen=True)
class EnrollStep:
    """One enrollment step: `apply(ctx, stage, manifest)` writes files through `stage.path` and returns the updated manifest."""

    name: str
    apply: Callable[[EnrollContext, StagedBundle, Manifest], Manifest]


def threshold_step(ctx: EnrollContext, stage: StagedBundle, manifest: Manifest) -> Manifest:
    """Set the threshold at the target FRR; record the per-image scores in enrollment.json.

    Raises:
        ConfigError: too few images for the target (unless best effort), or a threshold
            above 1 (the margin would make the station accept every part).
        DataError: a score is NaN or infinite (a broken model output).
    """
    import json

    o = ctx.options
    thr: FrrThreshold = frr_threshold(
        ctx.scores, o.target_frr, o.confidence, margin=o.margin, best_effort=o.best_effort
    )
    ctx.results["threshold"] = thr
    if thr.value > 1.0:  # scores are probabilities: such a threshold would never reject a part
        raise ConfigError(
            f"threshold {thr.value:.4f} is above 1 (highest good score {float(ctx.scores.max()):.4f} + margin "
            f"{o.margin:g}); scores lie in [0, 1], so nothing would ever be rejected: use a smaller --margin"
        )
    if thr.best_effort:
        log.warning(
            "too few images for FRR %g at %g confidence: the threshold certifies only FRR <= %.3g",
            o.target_frr,
            o.confidence,
            thr.frr_bound,
        )
    stage.path(SCORES_FILE).write_text(json.dumps(_scores_doc(ctx, thr), indent=2) + "\n", encoding="utf-8")
    return replace(manifest, threshold=_manifest_threshold(ctx, thr), lineage=_enrollment_lineage(ctx, thr, manifest))


def _scores_doc(ctx: EnrollContext, thr: FrrThreshold) -> dict[str, Any]:
    """enrollment.json: how the threshold was set and each scored image's file, sha256 and score."""
    return {
        "method": thr.describe(),
        "target_frr": thr.target_frr,
        "confidence": thr.confidence,
        "frr_bound": thr.frr_bound,
        "expected_frr": thr.expected_frr,
        "exceedances": thr.exceedances,
        "margin": thr.margin,
        "best_effort": thr.best_effort,
        "threshold": thr.value,
        "backend": ctx.backend_info.get("backend"),
        "precision": ctx.backend_info.get("precision"),
        "images_sha256": ctx.images_sha256,
        "images": [
            {"file": p.name, "sha256": h, "score": float(s)}
            for p, h, s in zip(ctx.images, ctx.image_sha256, ctx.scores)
        ],
    }


def _manifest_threshold(ctx: EnrollContext, thr: FrrThreshold) -> Threshold:
    """The manifest's threshold record for `thr`, naming the images and backend it came from."""
    return Threshold(
        value=thr.value,
        method=thr.describe(),
        source=f"enroll: {len(ctx.images)} good images, {ctx.backend_info.get('backend')} {ctx.backend_info.get('precision')}",
        epoch=None,
        images=thr.n_images,
        data_sha256=ctx.images_sha256,
        frr=thr.frr_bound,
        far=None,
        confidence=thr.confidence,
    )


def _enrollment_lineage(ctx: EnrollContext, thr: FrrThreshold, manifest: Manifest) -> dict[str, Any]:
    """`manifest`'s lineage plus an "enrollment" entry: source bundle, images, target and the threshold replaced."""
    lineage = dict(manifest.lineage)
    lineage["enrollment"] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_bundle_manifest_sha256": ctx.bundle.manifest_sha256,
        "images_sha256": ctx.images_sha256,
        "images": thr.n_images,
        "target_frr": thr.target_frr,
        "frr_bound": thr.frr_bound,
        "confidence": thr.confidence,
        "previous_threshold": {"value": manifest.threshold.value, "method": manifest.threshold.method},
        "scores_file": SCORES_FILE,
    }
    return lineage


def enroll_bundle(
    bundle_dir: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    options: EnrollOptions,
    extra_steps: Sequence[EnrollStep] = (),
) -> tuple[Bundle, EnrollContext]:
    """Score the good images of `images_dir` with the bundle's backend and write the enrolled
    copy to `out_dir`. Checks everything cheap (bundle, images, target) before scoring.

    Args:
        bundle_dir: the bundle to enroll from; it is never modified.
        images_dir: good parts only, searched recursively.
        out_dir: the enrolled bundle to write (all or nothing).
        options: see `EnrollOptions`.
        extra_steps: more steps, run after the threshold step.

    Returns:
        The enrolled bundle as loaded back, and the context the steps shared (scores, results).

    Raises:
        ConfigError: a bad target, margin or shot count.
        BundleError: the bundle does not load, or has no memory_bank input when shots are asked for.
        DataError: no images, or an image that cannot be read.
    """
    from edge_runtime.thresholds import check_target

    check_target(options.target_frr, options.confidence)
    if options.margin < 0:
        raise ConfigError(f"--margin must be >= 0, got {options.margin}")
    bundle = load_bundle(bundle_dir)
    images = find_images(images_dir)
    if options.shots and bundle.manifest.fewshot is None:
        raise BundleError(
            f"bundle {bundle.root} has no memory_bank input; export it with --bank-shots K to enroll shots"
        )
    backend, info, scored, scores, bank_steps = _score_good_images(bundle, images, options)
    if options.input_profile:
        bank_steps.append(_input_profile_step(bundle, images))
    hashes = [sha256_file(p) for p in scored]
    ctx = EnrollContext(bundle, backend, dict(info), list(scored), hashes, scores, options)
    steps = (*bank_steps, EnrollStep("threshold", threshold_step), *extra_steps)
    with StagedBundle(bundle, Path(out_dir), overwrite=options.overwrite) as stage:
        manifest = bundle.manifest
        for step in steps:
            manifest = step.apply(ctx, stage, manifest)
        return stage.commit(manifest), ctx


def _score_good_images(
    bundle: Bundle, images: list[Path], options: EnrollOptions
) -> tuple[Any, dict[str, Any], list[Path], np.ndarray, list[EnrollStep]]:
    """Score `images` with the bundle's backend (closed again before returning).

    With `options.shots`, the bank is drawn from `images` first and only the other images are
    scored: the bank's own images score optimistically low.

    Returns:
        (backend, backend info, scored images, their scores, the step that saves the bank if any).

    Raises:
        ConfigError: every image went into the bank.
    """
    from edge_runtime.session import load_backend

    backend, info = load_backend(bundle, options.backend, options.precision)
    bank_steps: list[EnrollStep] = []
    try:
        scored = images
        if options.shots:
            from edge_runtime.fewshot import enrol_shots, save_bank

            bank, shots, scored = enrol_shots(backend, bundle, images, options.shots, options.shot_seed)
            if not scored:
                raise ConfigError(
                    f"all {len(images)} images went into the {options.shots}-shot bank; "
                    "the threshold needs other good images"
                )
            bank_steps.append(EnrollStep("fewshot", lambda c, st, m: save_bank(st.staging, m, bank, shots)))
        scores = score_images(bundle, backend, scored, options.batch_size)
    finally:
        backend.close()
    return backend, info, scored, scores, bank_steps


def _input_profile_step(bundle: Bundle, images: list[Path]) -> EnrollStep:
    """The step that stores the good images' input statistics for the input alarm."""
    from edge_runtime.input_alarm import profile_from_images, save_profile

    profile = profile_from_images(images, preprocess=bundle.manifest.preprocess)
    return EnrollStep("input_profile", lambda c, st, m: save_profile(st.staging, m, profile))
