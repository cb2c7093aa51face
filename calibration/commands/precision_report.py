"""`clipinspect precision-report`: FP32 vs FP16 vs INT8 scores, AUROC and verdicts on labelled images."""

from __future__ import annotations

import argparse

from edge_runtime.backends import backend_help
from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's flags."""
    p.add_argument("--bundle", required=True, help="bundle folder")
    p.add_argument(
        "--images",
        required=True,
        help="labelled images: MVTec category/root (test/good vs test/<defect>), a test folder, or a CSV (image_id,label)",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the report (with per-image scores) as JSON")
    p.add_argument(
        "--precisions", default="fp32,fp16,int8", help="comma-separated precisions to compare (default fp32,fp16,int8)"
    )
    p.add_argument("--max-images", type=int, default=0, help="use at most N images, evenly spaced (default 0 = all)")
    p.add_argument(
        "--no-fp16-convert",
        action="store_true",
        help="do not convert FP32 to FP16 on the fly when the bundle has no fp16 model",
    )
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--backend", default="ort-cpu", help="scoring " + backend_help() + ", as `run` uses it")


def run(args: argparse.Namespace) -> int:
    """Print the precision table (and write --json).

    Returns:
        0.

    Raises:
        ConfigError: bad flags. BundleError, DataError, BackendUnavailable: bad input (exit 2).
    """
    from edge_runtime.deps import require
    from edge_runtime.errors import ConfigError

    require("onnxruntime", extra="export", purpose="the precision report")
    from calibration.precision_report import PRECISIONS, format_table, precision_report

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ConfigError(f"--precisions must list some of {', '.join(PRECISIONS)}, got {args.precisions!r}")
    if args.max_images < 0 or args.threads < 1:
        raise ConfigError("--max-images must be >= 0 and --threads >= 1")
    report = precision_report(
        args.bundle,
        args.images,
        precisions=precisions,
        max_images=args.max_images,
        convert_fp16=not args.no_fp16_convert,
        threads=args.threads,
        progress=not getattr(args, "quiet", False),
        backend=args.backend,
    )
    print(format_table(report))
    if args.json:
        print(f"wrote {report.write_json(args.json)}")
    return 0


COMMAND = Command(
    help="compare FP32/FP16/INT8 scores, AUROC and verdicts of a bundle on labelled images",
    add_arguments=add_arguments,
    run=run,
)
