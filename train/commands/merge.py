"""`clipinspect merge`: fold a run's LoRA adapters into CLIP and write a merged model folder."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="training run folder")
    p.add_argument("--out", required=True, help="merged model folder to write")
    p.add_argument("--epoch", type=int, help="epoch to merge (default: the last saved)")


def run(args: argparse.Namespace) -> int:
    from edge_runtime.deps import require

    for mod in ("torch", "transformers", "peft"):
        require(mod, extra="train", purpose="merging adapters")
    from pathlib import Path

    from train.merged import merge_run

    info = merge_run(Path(args.run), Path(args.out), epoch=args.epoch)
    print(f"merged {args.run} (epoch {info.epoch}) -> {args.out}")
    print(f"model id {info.model_id}; threshold {info.threshold:.4f} ({info.threshold_method})")
    return 0


COMMAND = Command(
    help="merge a run's LoRA adapters into CLIP (PEFT merge_and_unload)", add_arguments=add_arguments, run=run
)
