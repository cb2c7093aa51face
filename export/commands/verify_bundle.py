"""`clipinspect verify-bundle`: the torch reference vs a device backend on real image files.

The candidate is built from the backend registry (`edge_runtime.backends.make_backend`), so
`--backend ort-cpu` runs the same OrtBackend the device runs, not a copy of it.
"""

from __future__ import annotations

import argparse
from contextlib import closing

from edge_runtime.backends import backend_help
from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's flags."""
    p.add_argument("--bundle", required=True, help="bundle folder")
    p.add_argument(
        "--trusted-keys",
        default=None,
        metavar="DIR",
        help="refuse the bundle unless signed by a key in DIR (default /etc/clipinspect/trusted_keys when it holds keys)",
    )
    p.add_argument("--images", required=True, help="folder of image files (searched recursively; *_mask files skipped)")
    p.add_argument(
        "--backend", default="ort-cpu", help="candidate " + backend_help() + "; GPU ones only where they run"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="which ONNX model of the bundle to check (default fp32)",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=None,
        help="tolerance on |Δscore| and |Δmap| (default: fp32 1e-4, fp16 1e-2, int8 5e-2)",
    )
    p.add_argument(
        "--max-images", type=int, default=16, help="check at most N images, evenly spaced (default 16; 0 = all)"
    )
    p.add_argument(
        "--merged", default=None, help="merged model folder for the torch reference (default: the one in the manifest)"
    )
    p.add_argument("--table", action="store_true", help="print one line per image")


def run(args: argparse.Namespace) -> int:
    """Compare the candidate backend with the torch reference; print the report.

    Returns:
        0 when every image is within tolerance.

    Raises:
        CheckFailed: a difference beyond --atol (exit 1).
        ConfigError, BundleError, BackendUnavailable, DataError: bad input (exit 2).
    """
    from edge_runtime.deps import require
    from edge_runtime.errors import CheckFailed, ConfigError

    require("torch", extra="train", purpose="the torch reference of verify-bundle")
    from edge_runtime.backends import make_backend
    from edge_runtime.bundle import load_bundle
    from export.parity import default_atol, list_images, run_parity
    from export.torch_backend import TorchBackend

    atol = default_atol(args.precision) if args.atol is None else args.atol
    if atol < 0:
        raise ConfigError(f"--atol must be >= 0, got {atol}")
    from edge_runtime.signing import resolve_trusted_keys

    bundle = load_bundle(
        args.bundle, trusted_keys=resolve_trusted_keys(args.trusted_keys)
    )  # sha256 of every file checked here
    if args.backend.startswith("ort"):
        bundle.model_path(args.precision)  # cheap checks first: a missing variant fails before torch loads
    images = list_images(args.images, args.max_images)
    # The device's own backend from the registry; refuses what cannot run here, never substitutes.
    with closing(make_backend(args.backend)) as candidate, TorchBackend(merged=args.merged) as reference:
        candidate.load(bundle, args.precision)
        reference.load(bundle, "fp32")
        report = run_parity(bundle, reference, candidate, images, atol)
    if args.table:
        print(report.table())
    print(f"bundle {bundle.root} ({bundle.manifest.model_id}, manifest {bundle.manifest_sha256[:12]})")
    print(f"max |Δscore| {report.max_score_diff:.3e}")
    print(f"max |Δmap|   {report.max_map_diff:.3e}")
    print(f"verdicts agree at threshold {report.threshold:.6g}: {report.verdicts_agree}/{len(report.rows)}")
    print(report.speed())
    print(report.summary())
    if not report.ok:
        raise CheckFailed(
            f"{report.candidate} differs from {report.reference} beyond atol {atol:g} "
            f"(max |Δscore| {report.max_score_diff:.3e}, max |Δmap| {report.max_map_diff:.3e})"
        )
    return 0


COMMAND = Command(
    help="check a device backend on a bundle against the torch reference on real images",
    add_arguments=add_arguments,
    run=run,
)
