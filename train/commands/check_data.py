"""`clipinspect check-data D`: read a data set in any accepted layout, decode every image and
mask, and print its classes per category, so bad files fail before a long training.

`--write-manifest F` also records the sha256 of every image and mask (train/data_manifest.py);
`--verify-manifest F` re-hashes them and refuses any changed, missing or unlisted file."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="MVTec/VisA folder, meta.json or CSV (image_id,label,description)")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"])
    p.add_argument("--categories", nargs="+", default=None, help="only these categories")
    p.add_argument(
        "--unsplit",
        choices=["error", "seeded", "test"],
        default="seeded",
        help="CSV rows without a split: accept them here (default), or refuse them (error)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--write-manifest", metavar="FILE", help="write the sha256 of every image and mask to FILE (JSON)"
    )
    group.add_argument("--verify-manifest", metavar="FILE", help="check every image and mask against FILE")


def run(args: argparse.Namespace) -> int:
    from train.data import category_counts, check_samples, load_samples
    from train.data_manifest import build_manifest, verify_manifest, write_manifest

    samples = load_samples(args.data, splits=args.splits, categories=args.categories, unsplit=args.unsplit)
    if args.verify_manifest:  # before decoding: a changed file is the first thing to know
        digest = verify_manifest(args.verify_manifest, args.data, samples)
    check_samples(samples)
    counts = category_counts(samples)
    pixel = {s.category for s in samples if s.pixel_gt}
    width = max(8, *(len(c) for c in counts))
    print(f"{'category':<{width}}  {'normal':>7}  {'anomalous':>9}  masks")
    for cat, (normal, anomalous) in counts.items():
        print(f"{cat:<{width}}  {normal:>7}  {anomalous:>9}  {'yes' if cat in pixel else 'no'}")
    print(f"{len(samples)} images OK in {args.data}")
    if args.write_manifest:
        doc = build_manifest(args.data, samples, progress=True)
        path = write_manifest(args.write_manifest, doc)
        print(f"data manifest {path}: {doc['images']} images, sha256 {doc['sha256']}")
    elif args.verify_manifest:
        print(f"every image and mask matches {args.verify_manifest} (sha256 {digest})")
    return 0


COMMAND = Command(
    help="check a data set: layout, labels, every image and mask; write/verify a sha256 manifest",
    add_arguments=add_arguments,
    run=run,
)
