"""`clipinspect export`: merged model folder -> bundle (one ONNX graph + text embeddings + manifest)."""

from __future__ import annotations

import argparse

from edge_runtime.cli import Command
from edge_runtime.rawframe import INPUT_FORMATS


def add_frame_arguments(p: argparse.ArgumentParser) -> None:
    """--input-format/--input-size/--roi: a raw-frame bundle (shared with export.random_bundle)."""
    p.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="graph input = the camera's uint8 frame in this format (ROI, demosaic, resize, normalise in the graph)",
    )
    p.add_argument(
        "--input-size", metavar="WxH", help="frame size as the camera delivers it, e.g. 4096x2160 (with --input-format)"
    )
    p.add_argument(
        "--roi", metavar="X,Y,W,H", help="region of the frame the model sees, in frame pixels (raw-frame bundles)"
    )


def frame_options(args: argparse.Namespace) -> dict:
    """ExportOptions keyword arguments from the raw-frame flags."""
    from edge_runtime.preprocess import Roi
    from edge_runtime.rawframe import parse_size

    roi = Roi.parse(args.roi) if args.roi else None
    return {
        "input_format": args.input_format,
        "input_size": parse_size(args.input_size) if args.input_size else None,
        "roi": (roi.x, roi.y, roi.width, roi.height) if roi else None,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--merged", required=True, help="merged model folder (from 'clipinspect merge')")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension (default: static batch 1)")
    p.add_argument(
        "--float-input",
        action="store_true",
        help="image input float32 NCHW, already normalised (default: uint8 NHWC RGB, normalised in the graph)",
    )
    p.add_argument(
        "--bake-text",
        action="store_true",
        help="fold the text embeddings into the graph as a constant (no text_embeddings input)",
    )
    add_frame_arguments(p)
    p.add_argument("--threshold", type=float, default=None, help="override the merged model's decision threshold")
    p.add_argument(
        "--threshold-method",
        default="set by hand at export",
        help="how --threshold was chosen (recorded in the manifest)",
    )
    p.add_argument(
        "--no-optimize", action="store_true", help="skip the onnxscript graph optimizer (constant folding stays on)"
    )
    p.add_argument(
        "--bank-shots",
        type=int,
        default=0,
        metavar="K",
        help="add a few-shot memory_bank input for up to K (1..16) good images, filled later on the device by enrolment (default 0: none)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")


def run(args: argparse.Namespace) -> int:
    from edge_runtime.deps import require

    require("torch", extra="train", purpose="export")
    require("onnx", extra="export", purpose="export")
    require("onnxscript", extra="export", purpose="export")
    from export.exporter import ThresholdOverride, export_bundle
    from export.onnx_export import ExportOptions

    options = ExportOptions(
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        float_input=args.float_input,
        bake_text=args.bake_text,
        optimize=not args.no_optimize,
        bank_shots=args.bank_shots,
        **frame_options(args),
    )
    override = ThresholdOverride(args.threshold, args.threshold_method) if args.threshold is not None else None
    bundle = export_bundle(args.merged, args.out, options, overwrite=args.force, threshold=override)
    m = bundle.manifest
    print(f"bundle {bundle.root}  (manifest sha256 {bundle.manifest_sha256})")
    print(f"  model      {m.model_id}  from {m.clip_source}")
    for spec in m.inputs + m.outputs:
        kind = "input " if spec in m.inputs else "output"
        print(f"  {kind}     {spec.name:<16} {spec.dtype:<8} {list(spec.shape)}")
    print(f"  threshold  {m.threshold.value:.6g} ({m.threshold.method})")
    print(f"  opset {m.opset}, files: " + ", ".join(f"{n} ({e.bytes / 1e6:.1f} MB)" for n, e in m.files.items()))
    return 0


COMMAND = Command(
    help="export a merged model to an edge bundle (ONNX + manifest)", add_arguments=add_arguments, run=run
)
