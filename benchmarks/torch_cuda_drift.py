"""Score drift of the torch backend on CUDA (FP32 and FP16) against ONNX Runtime CPU FP32.

    python benchmarks/torch_cuda_drift.py --bundle B --images DIR [--images DIR ...] [--max-images 24] [--json OUT]

ONNX Runtime on the CPU runs the bundle's graph: the score the device is checked against.
The torch backend (export/torch_backend.py: the merged model, device preprocessing) runs the
same images on `cuda` in FP32 (must agree to 1e-4, DESIGN §5) and in FP16: its drift is the
budget a TensorRT FP16 engine has to stay within (DESIGN: FP16 ≈ 1e-2). Prints one line per
precision and writes every number (max/mean |Δscore|, max |Δmap|, verdict agreement, ms per
image) as JSON. Exit 1 when a precision exceeds its tolerance, 2 on bad input, 3 without CUDA.
Part of benchmarks/device_check.sh.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--images", action="append", required=True, help="image folder (repeatable; *_mask files skipped)")
    p.add_argument("--max-images", type=int, default=24, help="at most N images per folder, evenly spaced")
    p.add_argument("--device", default="cuda", help="torch device (default cuda; cpu runs fp32 only)")
    p.add_argument("--precisions", default="fp32,fp16", help="comma-separated, from fp32,fp16 (default both)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from edge_runtime.bundle import load_bundle
    from edge_runtime.errors import ClipInspectError

    try:
        import torch

        if not torch.cuda.is_available() and args.device.startswith("cuda"):
            print(f"torch_cuda_drift: no CUDA GPU visible to torch {torch.__version__}", file=sys.stderr)
            return 3
        from edge_runtime.backends import make_backend
        from export.parity import list_images, run_parity
        from export.torch_backend import TorchBackend

        bundle = load_bundle(args.bundle)
        images = [img for folder in args.images for img in list_images(folder, args.max_images)]
        reference = make_backend("ort-cpu")
        reference.load(bundle, "fp32")
        results, failed = {}, False
        wanted = [x.strip() for x in args.precisions.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in TOLERANCE]
        if unknown or not wanted:
            print(f"torch_cuda_drift: error: --precisions: choose from {', '.join(TOLERANCE)}", file=sys.stderr)
            return 2
        for precision in wanted:
            atol = TOLERANCE[precision]
            candidate = TorchBackend(device=args.device)
            candidate.load(bundle, precision)
            try:
                report = run_parity(bundle, reference, candidate, images, atol, progress=False)
            finally:
                candidate.close()
            scores = [r.score_diff for r in report.rows]
            results[precision] = {
                "atol": atol,
                "images": len(report.rows),
                "ok": bool(report.ok),
                "max_abs_score_diff": report.max_score_diff,
                "max_abs_map_diff": report.max_map_diff,
                "mean_abs_score_diff": sum(scores) / max(len(scores), 1),
                "verdicts_agree": report.verdicts_agree,
                "threshold": report.threshold,
                "speed": report.speed(),
            }
            failed |= not report.ok
            print(
                f"torch {args.device} {precision} vs ort-cpu fp32 on {len(report.rows)} images: max |Δscore| "
                f"{report.max_score_diff:.3e}, max |Δmap| {report.max_map_diff:.3e} (atol {atol:g}: "
                f"{'ok' if report.ok else 'EXCEEDED'}); verdicts agree {report.verdicts_agree}/{len(report.rows)}"
            )
        reference.close()
    except ClipInspectError as exc:
        print(f"torch_cuda_drift: error: {exc}", file=sys.stderr)
        return exc.exit_code
    doc = {
        "bundle": str(bundle.root),
        "model_id": bundle.manifest.model_id,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "results": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
