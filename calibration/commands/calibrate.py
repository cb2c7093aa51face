"""`clipinspect calibrate`: INT8 Q/DQ variant of a bundle's model from a sample of normal images."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from edge_runtime.cli import Command
from edge_runtime.runtime_flags import add_set_flag

log = logging.getLogger("clipinspect.calibrate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle", required=True, help="bundle folder (from 'clipinspect export'); model.int8.onnx is written into it"
    )
    p.add_argument(
        "--images",
        required=True,
        help="normal images: a folder, an MVTec category/root (train/good is used) or a CSV (image_id,label)",
    )
    p.add_argument(
        "--num",
        type=int,
        default=32,
        help="number of calibration images (default 32; must not exceed what --images holds)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the image sample (default 0)")
    p.add_argument(
        "--method",
        choices=("minmax", "entropy", "percentile"),
        default=None,
        help="activation range calibration (default minmax)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=None,
        metavar="PATTERN",
        help="keep nodes float whose name or input/output names match this fnmatch pattern (repeatable)",
    )
    p.add_argument(
        "--op-types", default=None, help="comma-separated ops to quantize, from MatMul,Gemm,Conv (default MatMul,Gemm)"
    )
    p.add_argument("--config", default=None, help="YAML with quantization options (see calibration.qdq.QuantConfig)")
    add_set_flag(p, "override a quantization option, e.g. --set per_channel=false")
    p.add_argument(
        "--trt-cache",
        action="store_true",
        help="also calibrate TensorRT's entropy calibrator on the same images: writes its cache and an int8 engine (needs TensorRT + pycuda: run on the target)",
    )
    p.add_argument(
        "--calib-batch",
        type=int,
        default=8,
        help="TensorRT calibration batch size for --trt-cache (default 8; static-batch models use their batch)",
    )


def run(args: argparse.Namespace) -> int:
    from edge_runtime.deps import require

    require("onnx", extra="export", purpose="INT8 calibration")
    require("onnxruntime", extra="export", purpose="INT8 calibration")
    from calibration.calibration_set import sample_calibration_set
    from calibration.qdq import QuantConfig, calibrate_bundle
    from edge_runtime.bundle import load_bundle
    from edge_runtime.config import load_config

    config = load_config(QuantConfig, args.config, args.overrides)
    flags: dict = {}
    if args.method:
        flags["method"] = args.method
    if args.op_types:
        flags["op_types"] = tuple(t.strip() for t in args.op_types.split(",") if t.strip())
    if args.exclude:
        flags["exclude"] = tuple(config.exclude) + tuple(args.exclude)
    config = replace(config, **flags)  # re-validated by QuantConfig.__post_init__

    bundle = load_bundle(args.bundle, verify=True)  # fail on a bad bundle before reading images
    if args.trt_cache:  # asked for TensorRT: fail now, not after quantizing, if it is not here
        from edge_runtime.trt import compat

        compat.import_tensorrt("--trt-cache (TensorRT INT8 calibration cache)")
        compat.import_cuda("--trt-cache (TensorRT INT8 calibration cache)")
    calib = sample_calibration_set(args.images, args.num, args.seed)
    batch = bundle.manifest.input("image").shape[0]
    batch_size = batch if isinstance(batch, int) else 1
    log.info(
        "calibrating %s on %d of %d images from %s (seed %d, set %s), batch %d, %s",
        bundle.root,
        len(calib),
        calib.available,
        args.images,
        args.seed,
        calib.sha256[:16],
        batch_size,
        config.describe(),
    )
    out = calibrate_bundle(
        bundle.root, calib, config, batch_size=batch_size, progress=not getattr(args, "quiet", False)
    )

    sel = out.result.selection
    print(f"INT8 Q/DQ model  {out.bundle_root / out.model_file}")
    print(f"  quantization   {config.describe()}")
    print(f"  nodes          {sel.summary()}")
    print(f"  calibration    {out.num_images} images, seed {args.seed}, set sha256 {out.calibration_set_sha256}")
    print(f"  sanity         max |score INT8 - FP32| on the calibration images: {out.score_drift_max:.4g}")
    print("  next           clipinspect precision-report --bundle", out.bundle_root, "--images <labelled test images>")
    if args.trt_cache:
        built = write_trt_calibration_cache(out.bundle_root, calib, args.calib_batch)
        e = built.entry
        how = "reused" if built.used_calibration_cache else "written"
        print(
            f"  tensorrt       {e.tensorrt_version} on {e.gpu_name}: calibration cache {e.calibration_cache} ({how}), engine {e.file} (implicit INT8 from the FP32 ONNX)"
        )
    return 0


def write_trt_calibration_cache(bundle_root, calib, calib_batch: int = 8, workspace_mb: int = 1024):
    """TensorRT implicit-INT8 calibration on the same calibration set, through the target-side
    builder (edge_runtime.trt.builder, entropy calibrator): TensorRT writes its cache while it
    builds an engine, so this builds `model.int8.engine` from the FP32 ONNX and records engine,
    cache and the set's sha256 in the manifest. Needs TensorRT + pycuda (a GPU): run it on the
    target. Returns H5's BuildResult."""
    from edge_runtime.bundle import load_bundle
    from edge_runtime.trt.builder import BuildOptions, CalibrationSet, build_engine

    bundle = load_bundle(bundle_root, verify=True)
    pre = bundle.manifest.preprocess

    def make_batches(n: int):
        # The calibrator needs exactly the calibration shape: drop a last partial batch.
        return (
            b
            for b in calib.batches(pre.image_size, n, color_order=pre.color_order, method=pre.resize)
            if b.shape[0] == n
        )

    opts = BuildOptions(
        precision="int8", onnx="fp32", calib_batch=min(calib_batch, len(calib)), workspace_mb=workspace_mb
    )
    return build_engine(bundle, opts, CalibrationSet(make_batches=make_batches, sha256=calib.sha256))


COMMAND = Command(
    help="calibrate an INT8 Q/DQ variant of a bundle's model (ONNX Runtime static quantization)",
    add_arguments=add_arguments,
    run=run,
)
