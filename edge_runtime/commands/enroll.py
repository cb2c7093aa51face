"""`clipinspect enroll --bundle B --images good/ --target-frr 0.005 --out B2`: set a station's
threshold from good parts only, at a stated false-reject rate with a distribution-free
confidence bound (edge_runtime.thresholds), and write the enrolled copy of the bundle.

Runs on the device: the bundle's own backend scores the images (no torch). Further options
add their enrollment steps in `steps(args)` (each may add files to the new bundle).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.backends import backend_help
from edge_runtime.cli import Command


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `clipinspect enroll` (they map one to one onto `EnrollOptions`)."""
    p.add_argument("--bundle", required=True, type=Path, help="bundle to enroll (left unchanged)")
    p.add_argument(
        "--images", required=True, type=Path, help="folder of GOOD part images from this station (recursive)"
    )
    p.add_argument(
        "--target-frr",
        required=True,
        type=_fraction,
        metavar="FRR",
        help="false-reject rate to guarantee, e.g. 0.005 for 0.5 %% of good parts rejected",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the enrolled bundle (a new copy)")
    p.add_argument(
        "--confidence",
        type=_fraction,
        default=0.95,
        help="confidence of the FRR bound (default 0.95); more confidence needs more images",
    )
    p.add_argument(
        "--margin",
        type=_fraction,
        default=0.0,
        help="score margin added on top (covers FP16/INT8 drift; lowers FRR further, default 0)",
    )
    p.add_argument(
        "--best-effort",
        action="store_true",
        help="with too few images, use the highest good score and record the weaker FRR bound it gives",
    )
    p.add_argument("--backend", default="ort-cpu", help=backend_help() + "; scores as `run` would")
    p.add_argument("--precision", default="fp32", help="precision, as `run` would use it (default fp32)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--shots",
        type=int,
        default=0,
        metavar="K",
        help="also store a few-shot memory bank of K of the images (bundle exported with --bank-shots >= K); "
        "the threshold then comes from the other images, scored with the bank",
    )
    p.add_argument("--shot-seed", type=int, default=0, help="seed for drawing the K shots (default 0)")
    p.add_argument(
        "--no-input-profile",
        action="store_true",
        help="do not store the images' input statistics (the input alarm then stays off)",
    )


def steps(args: argparse.Namespace) -> list:
    """Enrollment steps after the threshold, chosen by options (none yet)."""
    return []


def run(args: argparse.Namespace) -> int:
    """Enroll, then print the scores, the threshold and the FRR bound it certifies; 0 on success, our errors propagate to the CLI."""
    from edge_runtime.enroll import EnrollOptions, enroll_bundle

    options = EnrollOptions(
        target_frr=args.target_frr,
        confidence=args.confidence,
        margin=args.margin,
        best_effort=args.best_effort,
        backend=args.backend,
        precision=args.precision,
        batch_size=args.batch_size,
        overwrite=args.force,
        shots=args.shots,
        shot_seed=args.shot_seed,
        input_profile=not args.no_input_profile,
    )
    bundle, ctx = enroll_bundle(args.bundle, args.images, args.out, options, extra_steps=steps(args))
    thr = ctx.results["threshold"]
    s = ctx.scores
    print(
        f"scored {len(s)} good images with {ctx.backend_info.get('backend')} {ctx.backend_info.get('precision')}: "
        f"min {s.min():.4f}, median {float(sorted(s)[len(s) // 2]):.4f}, max {s.max():.4f}"
    )
    print(f"threshold {thr.value:.6f}: {thr.describe()}")
    from edge_runtime.thresholds import images_needed

    print(
        f"FRR {thr.target_frr:g} at {thr.confidence:g} confidence needs >= {images_needed(thr.target_frr, thr.confidence)} "
        f"good images (threshold at the top score); {len(s)} given, {thr.exceedances} allowed above the threshold"
    )
    if thr.best_effort:
        print(f"WARNING: {len(s)} images certify FRR <= {thr.frr_bound:.3g}, not the target {thr.target_frr:g}")
    print(f"images sha256 {ctx.images_sha256}")
    fs = bundle.manifest.fewshot
    if fs is not None and fs.shots:
        print(f"few-shot bank: {fs.shots} image(s) ({', '.join(fs.images)}); threshold from the other {len(s)}")
    if bundle.manifest.input_profile:
        print(f"input profile: {bundle.manifest.input_profile} (input alarm on)")
    print(f"wrote {bundle.root} (manifest sha256 {bundle.manifest_sha256[:16]}); a signed bundle must be signed again")
    return 0


COMMAND = Command(
    help="set the threshold from good parts at a target false-reject rate (writes a new bundle)",
    add_arguments=add_arguments,
    run=run,
)
