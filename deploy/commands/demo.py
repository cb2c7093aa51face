"""`clipinspect demo`: run the whole chain end to end on embedded defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.cli import Command


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="working folder (default ./demo_out, replaced)")
    p.add_argument(
        "--clip", help="real CLIP weights: Hugging Face hub id or local folder (default: tiny random stand-in)"
    )
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--source",
        choices=("auto", "gentl", "folder"),
        default="auto",
        help="replay source: auto = folder replay plus the GenICam simulator when installed",
    )
    p.add_argument("--bench-iters", type=int, default=30, help="bench iterations/frames per configuration (default 30)")
    p.add_argument("--keep", action="store_true", help="keep an existing --out folder instead of replacing it")


def _run(args: argparse.Namespace) -> int:
    from edge_runtime.deps import require

    for mod, extra in (("torch", "train"), ("onnx", "export"), ("paho.mqtt", "edge")):
        require(mod, extra=extra, purpose="the demo")
    from deploy.demo import DemoOptions, format_report, run_demo

    if args.epochs < 1 or args.bench_iters < 1:
        from edge_runtime.errors import ConfigError

        raise ConfigError("--epochs and --bench-iters must be >= 1")
    report = run_demo(
        DemoOptions(
            out=args.out,
            clip=args.clip,
            epochs=args.epochs,
            seed=args.seed,
            source=args.source,
            keep=args.keep,
            bench_iters=args.bench_iters,
        )
    )
    print(format_report(report))
    return 0


COMMAND = Command(
    help="run the whole chain end to end on embedded defaults (synthetic data, tiny CLIP, ONNX Runtime, embedded broker)",
    add_arguments=_add,
    run=_run,
)
