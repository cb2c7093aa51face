"""`clipinspect check-data D`: read a data set in any accepted layout, decode every image and
mask, and print its classes per category, so bad files fail before a long training."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="MVTec/VisA folder, meta.json or CSV (image_id,label,description)")
    p.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    p.add_argument("--categories", nargs="+", default=None, help="only these categories")


def run(args: argparse.Namespace) -> int:
    from train.data import category_counts, check_samples, load_samples

    samples = load_samples(args.data, splits=args.splits, categories=args.categories)
    check_samples(samples)
    counts = category_counts(samples)
    pixel = {s.category for s in samples if s.pixel_gt}
    width = max(8, *(len(c) for c in counts))
    print(f"{'category':<{width}}  {'normal':>7}  {'anomalous':>9}  masks")
    for cat, (normal, anomalous) in counts.items():
        print(f"{cat:<{width}}  {normal:>7}  {anomalous:>9}  {'yes' if cat in pixel else 'no'}")
    print(f"{len(samples)} images OK in {args.data}")
    return 0


COMMAND = Command(help="check a data set: layout, labels, every image and mask", add_arguments=add_arguments, run=run)
