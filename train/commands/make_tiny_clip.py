"""`clipinspect make-tiny-clip OUT`: write a random-init CLIP folder for offline tests."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command

ARCHS = ("tiny", "vit-b-16", "vit-l-14-336")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="folder to write (created)")
    p.add_argument("--arch", default="tiny", help=f"one of {', '.join(ARCHS)} (default tiny)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")


def run(args: argparse.Namespace) -> int:
    from edge_runtime.deps import require

    require("torch", extra="train", purpose="making a CLIP folder")
    require("transformers", extra="train", purpose="making a CLIP folder")
    from train.clip_presets import make_clip_folder

    out = make_clip_folder(args.out, arch=args.arch, seed=args.seed)
    print(f"wrote random-init CLIP ({args.arch}, seed {args.seed}) to {out} -- a RANDOM test model, not a trained CLIP")
    return 0


COMMAND = Command(
    help="write a random-init CLIP folder (tiny test model or real CLIP shapes)", add_arguments=add_arguments, run=run
)
