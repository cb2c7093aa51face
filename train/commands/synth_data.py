"""`clipinspect synth-data OUT`: write a small synthetic data set in the MVTec AD layout
(procedural textures with scratch / contamination / crack defects and exact masks)."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder (one sub-folder per category)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files (default 0)")
    p.add_argument("--categories", type=int, default=4, help="number of textured categories, 1-6 (default 4)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--train-good", type=int, default=8, help="train/good images per category (default 8)")
    p.add_argument(
        "--per-class",
        type=int,
        default=4,
        help="test images per class (test/good and each defect) per category (default 4)",
    )
    p.add_argument("--defects", nargs="+", default=None, help="defect classes (default: scratch contamination crack)")
    p.add_argument("--overwrite", action="store_true", help="replace category folders that already exist")


def run(args: argparse.Namespace) -> int:
    from train.synth import DEFECTS, SynthSpec, make_synthetic_dataset

    spec = SynthSpec(
        seed=args.seed,
        categories=args.categories,
        size=args.size,
        train_good=args.train_good,
        per_class=args.per_class,
        defects=tuple(args.defects or DEFECTS),
    )
    summary = make_synthetic_dataset(args.out, spec, overwrite=args.overwrite)
    print(
        f"wrote {summary.images} images and {summary.masks} masks to {summary.root} "
        f"(categories: {', '.join(summary.categories)}; seed {spec.seed}, {spec.size} px)"
    )
    return 0


COMMAND = Command(
    help="write a small synthetic MVTec-layout data set (deterministic by seed)", add_arguments=add_arguments, run=run
)
