"""`clipinspect build-engine`: build a TensorRT engine ON the target from a bundle's ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `clipinspect build-engine`: precision, which ONNX, builder limits and INT8 calibration images."""
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (manifest.json, model.onnx, ...)")
    p.add_argument("--precision", required=True, choices=["fp16", "int8"])
    p.add_argument(
        "--trusted-keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="only build from bundles signed by a key in DIR (default /etc/clipinspect/trusted_keys when it holds keys)",
    )
    p.add_argument(
        "--onnx",
        choices=["fp32", "int8"],
        default=None,
        help="ONNX to parse: fp32 export, or the int8 Q/DQ variant (default for int8 when the bundle has one)",
    )
    p.add_argument(
        "--workspace", type=int, default=1024, metavar="MB", help="builder workspace limit (default 1024 MB)"
    )
    p.add_argument(
        "--timing-cache", type=Path, default=None, metavar="FILE", help="load/save the builder timing cache here"
    )
    p.add_argument(
        "--calib-images", type=Path, default=None, metavar="DIR", help="normal images for INT8 calibration (fp32 ONNX)"
    )
    p.add_argument(
        "--calib-num", type=int, default=64, metavar="N", help="how many images to sample for calibration (default 64)"
    )
    p.add_argument("--calib-batch", type=int, default=8, metavar="B", help="calibration batch size (default 8)")
    p.add_argument("--calib-seed", type=int, default=0, help="seed for sampling calibration images")
    p.add_argument(
        "--max-batch", type=int, default=1, help="largest batch the engine accepts when the ONNX batch is dynamic"
    )
    p.add_argument("--opt-batch", type=int, default=1, help="batch size TensorRT tunes for")


def run(args: argparse.Namespace) -> int:
    """Build the engine into the bundle (recorded in its manifest) and print what was built, for which TensorRT and GPU."""
    from edge_runtime.bundle import load_bundle
    from edge_runtime.trt import compat
    from edge_runtime.trt.builder import BuildOptions, CalibrationSet, build_engine

    # Fail on the missing SDK before touching the bundle or images (one line, exit 2).
    compat.import_tensorrt("build-engine")
    compat.import_cuda("build-engine")
    opts = BuildOptions(
        precision=args.precision,
        onnx=args.onnx,
        workspace_mb=args.workspace,
        timing_cache=args.timing_cache,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        calib_batch=args.calib_batch,
    )
    from edge_runtime.signing import resolve_trusted_keys

    bundle = load_bundle(args.bundle, trusted_keys=resolve_trusted_keys(args.trusted_keys))
    calibration = None
    if args.calib_images is not None:
        from edge_runtime.trt.calib_data import ImageBatches, calibration_set_sha256, sample_images

        paths = tuple(sample_images(args.calib_images, args.calib_num, args.calib_seed))
        calibration = CalibrationSet(
            make_batches=lambda b: ImageBatches(paths, bundle.manifest.preprocess, b),
            sha256=calibration_set_sha256(paths),
        )
    result = build_engine(bundle, opts, calibration)
    e = result.entry
    print(f"engine      {result.bundle.path(e.file)}")
    print(f"precision   {e.precision} (flags: {', '.join(e.build_flags)}) from {e.source_onnx}")
    print(f"tensorrt    {e.tensorrt_version} on {e.gpu_name} (compute capability {e.compute_capability})")
    if e.calibration_cache:
        how = "reused" if result.used_calibration_cache else "written"
        print(f"calibration cache {e.calibration_cache} ({how}), set sha256 {e.calibration_set_sha256[:16]}")
    print(f"manifest    {result.bundle.root / 'manifest.json'} (sha256 {result.bundle.manifest_sha256[:16]})")
    print(f"trtexec equivalent:\n  {result.trtexec}")
    return 0


COMMAND = Command(
    help="build a TensorRT engine on this device from the bundle's ONNX", add_arguments=add_arguments, run=run
)
