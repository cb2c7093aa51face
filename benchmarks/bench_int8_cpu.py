"""INT8 vs FP32 on ONNX Runtime CPU, ViT-B/16 at 224, side by side in one run.

    python benchmarks/bench_int8_cpu.py [--work DIR] [--iters 15] [--threads 2] [--json OUT]

Builds (or reuses, in --work) a RANDOM-weight ViT-B/16 bundle with the real export
(export.random_bundle.make_random_bundle), calibrates INT8 static Q/DQ on a few normal images,
and times, interleaved (one run of each variant per round, after warm-up, same input,
`--threads` intra-op threads):

- fp32                 the exported model
- int8 QDQ S8S8        the bundle's model.int8.onnx (symmetric signed: what TensorRT takes)
- int8 QDQ U8S8        same selection, asymmetric uint8 activations (ONNX Runtime CPU only)
- int8 dynamic         weight-only dynamic quantization (ONNX Runtime CPU only)

Accuracy: with random weights AUROC means nothing, so the run reports score drift against
FP32 (max / mean |Δscore|, Pearson r) and OK/NG agreement at the bundle threshold on real
test images. AUROC drop needs a trained bundle: pass --trained-bundle to add the precision
report of one (e.g. an export of a model fine-tuned with `clipinspect train`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_int8_cpu")


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _bundle(args: argparse.Namespace):
    from edge_runtime.bundle import load_bundle

    if args.bundle:
        return load_bundle(args.bundle)
    out = Path(args.work) / f"random-{args.arch}"
    if (out / "manifest.json").is_file():
        log.info("reusing %s", out)
        return load_bundle(out)
    from export.random_bundle import make_random_bundle

    t = time.perf_counter()
    bundle = make_random_bundle(out, arch=args.arch, overwrite=True)
    log.info("built random %s bundle in %.0f s", args.arch, time.perf_counter() - t)
    return bundle


def _variants(bundle: Any, args: argparse.Namespace) -> dict[str, Path]:
    from calibration.calibration_set import sample_calibration_set
    from calibration.qdq import QuantConfig, bundle_feeds, calibrate_bundle, dynamic_weight_only, quantize_qdq
    from edge_runtime.bundle import load_bundle

    work = Path(args.work)
    calib = sample_calibration_set(args.images, args.calib_num, seed=0)
    pre = bundle.manifest.preprocess
    variants = {"fp32": bundle.model_path("fp32")}
    has_int8 = not args.recalibrate and any(
        v.precision == "int8" and v.calibration_set_sha256 == calib.sha256 for v in bundle.manifest.variants
    )
    t = time.perf_counter()
    if not has_int8:
        calibrate_bundle(bundle.root, calib, QuantConfig(), progress=False)
        bundle = load_bundle(bundle.root)
        log.info("calibrated S8S8 Q/DQ on %d images in %.0f s", len(calib), time.perf_counter() - t)
    variants["int8 QDQ S8S8 (TensorRT-ready)"] = bundle.model_path("int8")
    if not args.no_u8:
        u8 = work / "model.int8.u8s8.onnx"
        if args.recalibrate or not u8.is_file():
            t = time.perf_counter()
            feeds = bundle_feeds(
                bundle, calib.batches(pre.image_size, 1, color_order=pre.color_order, method=pre.resize)
            )
            quantize_qdq(
                bundle.model_path("fp32"), u8, feeds, QuantConfig(activation_type="uint8", symmetric_activations=False)
            )
            log.info("calibrated U8S8 Q/DQ in %.0f s", time.perf_counter() - t)
        variants["int8 QDQ U8S8 (ORT CPU only)"] = u8
    if not args.no_dynamic:
        dyn = work / "model.int8.dynamic.onnx"
        if args.recalibrate or not dyn.is_file():
            dynamic_weight_only(bundle.model_path("fp32"), dyn)
        variants["int8 dynamic weight-only (ORT CPU only)"] = dyn
    return variants


def _eval_feeds(bundle: Any, images: str, n: int) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    from calibration.precision_report import find_labelled_images
    from calibration.qdq import bundle_feeds
    from edge_runtime.imageio import read_rgb
    from edge_runtime.preprocess import prepare

    items = find_labelled_images(images)
    if n and len(items) > n:
        items = [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, n).round().astype(int)))]
    pre = bundle.manifest.preprocess
    batches = [
        prepare(read_rgb(it.path), pre.image_size, color_order=pre.color_order, method=pre.resize)[None] for it in items
    ]
    return list(bundle_feeds(bundle, batches)), [it.label for it in items]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from calibration.precision_report import compare_scores

    Path(args.work).mkdir(parents=True, exist_ok=True)
    bundle = _bundle(args)
    variants = _variants(bundle, args)
    sessions = {name: _session(path, args.threads) for name, path in variants.items()}
    feeds, labels = _eval_feeds(bundle, args.images, args.eval_images)
    latency_feed = feeds[0]

    for _ in range(args.warmup):
        for s in sessions.values():
            s.run(None, latency_feed)
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(args.iters):  # interleaved: load from other processes hits every variant alike
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, latency_feed)
            times[name].append((time.perf_counter() - t) * 1000.0)

    threshold = float(bundle.manifest.threshold.value)
    scores = {
        name: np.concatenate([s.run(["score"], f)[0] for f in feeds]).astype(np.float64) for name, s in sessions.items()
    }
    fp32_p50 = float(np.percentile(times["fp32"], 50))
    rows = []
    for name in sessions:
        t = np.asarray(times[name])
        acc = compare_scores(name, scores["fp32"], scores[name], labels, threshold)
        rows.append(
            {
                "variant": name,
                "file": variants[name].name,
                "p50_ms": float(np.percentile(t, 50)),
                "p90_ms": float(np.percentile(t, 90)),
                "speedup_p50": fp32_p50 / float(np.percentile(t, 50)),
                "max_abs_delta": acc.max_abs_delta,
                "mean_abs_delta": acc.mean_abs_delta,
                "pearson_r": acc.pearson_r,
                "verdict_agreement": acc.verdict_agreement,
                "auroc_random_weights": acc.auroc,
            }
        )
    result: dict[str, Any] = {
        "bundle": str(bundle.root),
        "model_id": bundle.manifest.model_id,
        "threads": args.threads,
        "iters": args.iters,
        "warmup": args.warmup,
        "eval_images": len(feeds),
        "threshold": threshold,
        "rows": rows,
        "cpu_int8_dot_product": int8_dot_product_flags(),
    }
    if args.trained_bundle:
        result["trained"] = _trained_report(args)
    return result


def _trained_report(args: argparse.Namespace) -> dict[str, Any]:
    from calibration.calibration_set import sample_calibration_set
    from calibration.precision_report import precision_report
    from calibration.qdq import QuantConfig, calibrate_bundle
    from edge_runtime.bundle import load_bundle

    b = load_bundle(args.trained_bundle)
    if not any(v.precision == "int8" for v in b.manifest.variants):
        calibrate_bundle(b.root, sample_calibration_set(args.images, args.calib_num), QuantConfig(), progress=False)
    report = precision_report(b.root, args.trained_images or args.images, progress=False)
    return report.to_dict()


def int8_dot_product_flags() -> list[str]:
    """CPU instructions that make 8-bit GEMM faster than FP32 (x86 VNNI, ARM dot product).
    Without them (plain AVX2) ONNX Runtime's U8S8 kernels run at about FP32 speed."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags = set(text.split())
    return sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})


def format_result(result: dict[str, Any]) -> str:
    head = f"{'variant':<42} {'p50 ms':>8} {'p90 ms':>8} {'x fp32':>7} {'max|Δscore|':>12} {'mean|Δ|':>9} {'pearson':>8} {'OK/NG=':>7}"
    lines = [
        f"ONNX Runtime CPU, {result['model_id']} ({result['bundle']}), batch 1, {result['threads']} intra-op threads, "
        f"{result['iters']} interleaved rounds after {result['warmup']} warm-up",
        head,
        "-" * len(head),
    ]
    for r in result["rows"]:
        pr = "-" if r["pearson_r"] is None else f"{r['pearson_r']:.4f}"
        lines.append(
            f"{r['variant']:<42} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['speedup_p50']:>6.2f}x {r['max_abs_delta']:>12.4g} {r['mean_abs_delta']:>9.3g} {pr:>8} {100 * r['verdict_agreement']:>6.1f}%"
        )
    lines.append(
        f"score drift and OK/NG agreement (threshold {result['threshold']:.4g}) on {result['eval_images']} real test images; "
        "weights are RANDOM, so AUROC is not reported here (meaningless)"
    )
    dot = result.get("cpu_int8_dot_product", [])
    lines.append(
        f"CPU int8 dot-product instructions: {', '.join(dot)}"
        if dot
        else "CPU int8 dot-product instructions: none (no VNNI / ARM dotprod): ONNX Runtime's int8 GEMM runs at about FP32 speed here"
    )
    trained = result.get("trained")
    if trained:
        for r in trained["rows"]:
            if r["status"] == "ok" and r["auroc"] is not None:
                lines.append(
                    f"trained bundle {r['precision']}: AUROC {r['auroc']:.4f} (Δ {r['auroc_delta']:+.4f} vs fp32), max|Δscore| {r['max_abs_delta']:.4g}"
                )
    else:
        lines.append("AUROC drop: not measured in this run (no --trained-bundle)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from edge_runtime.errors import ClipInspectError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work", default="/tmp/clipinspect-bench-int8", help="folder for the random bundle and extra variants (reused)"
    )
    p.add_argument("--arch", default="vit-b-16", help="random CLIP architecture (default vit-b-16)")
    p.add_argument("--bundle", default=None, help="benchmark this bundle instead of a random one")
    p.add_argument(
        "--images",
        default=str(REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"),
        help="MVTec category: train/good calibrates, test/ evaluates",
    )
    p.add_argument("--calib-num", type=int, default=4)
    p.add_argument("--eval-images", type=int, default=12)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-u8", action="store_true", help="skip the U8S8 variant")
    p.add_argument("--recalibrate", action="store_true", help="quantize again even if the work folder has INT8 models")
    p.add_argument("--no-dynamic", action="store_true", help="skip the dynamic weight-only variant")
    p.add_argument(
        "--trained-bundle", default=None, help="a trained bundle: add its FP32/FP16/INT8 precision report (AUROC drop)"
    )
    p.add_argument("--trained-images", default=None, help="labelled images for --trained-bundle (default --images)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        result = run(args)
    except ClipInspectError as exc:
        print(f"bench_int8_cpu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
