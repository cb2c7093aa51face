"""Raw-frame pipeline vs a plain single-threaded loop, same frames, same model, one run.

    python benchmarks/bench_naive_loop.py --rgb-bundle B224 --raw-bundle B4K \
        [--source "synthetic://?width=4096&height=2160&pixel_format=BayerRG8"] [--frames 12] [--rounds 3]

The plain loop is what a first Jetson prototype does: grab -> OpenCV demosaic (cvtColor
Bayer->RGB at full resolution) -> INTER_AREA resize to the model size -> ONNX Runtime on the
model-size RGB bundle, one frame after the other in one thread. The pipeline is
`clipinspect bench`'s end-to-end run of the raw-frame bundle (capture/preprocess/inference
threads, the frame handed to the graph uncopied, demosaic and resize inside the graph).
Both bundles must hold the same weights (python -m export.random_bundle with the same
--arch and --seed), so only the preprocessing and the loop differ.

Each round also times model-only inference of both bundles, calls interleaved: the raw-frame graph's p50 over the RGB graph's p50 is what the
in-graph crop/demosaic/resize costs.

Because whole-round frames/s swing by +-30 % on a busy shared machine, each round also
times the two paths' per-frame work alternating frame by frame on the same grabbed frames
(plain loop: demosaic + resize + infer; raw-frame: frame check + infer of the uncopied frame).

Rounds alternate the two (a load change on a shared machine hits both alike); the ratio
reported is pipeline frames/s over plain-loop frames/s, per round and its median.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

DEFAULT_SOURCE = "synthetic://?width=4096&height=2160&pixel_format=BayerRG8"
_OPENCV_BAYER = {
    "BayerRG8": "COLOR_BayerBG2RGB",
    "BayerBG8": "COLOR_BayerRG2RGB",
    "BayerGR8": "COLOR_BayerGB2RGB",
    "BayerGB8": "COLOR_BayerGR2RGB",
}


def naive_loop(backend: Any, source_uri: str, size_hw: tuple[int, int], frames: int, warmup: int = 2) -> dict[str, Any]:
    """Grab -> cv2 demosaic -> INTER_AREA -> infer, sequentially; per-stage ms and frames/s."""
    import cv2

    from edge_runtime.sources import open_source

    stages: dict[str, list[float]] = {"grab": [], "demosaic": [], "resize": [], "inference": [], "total": []}
    with open_source(source_uri, {}) as src:
        it = iter(src.frames())
        for i in range(warmup + frames):
            t0 = time.perf_counter()
            frame = next(it)
            t1 = time.perf_counter()
            code = _OPENCV_BAYER.get(str(frame.meta.get("pixel_format")))
            rgb = cv2.cvtColor(frame.image, getattr(cv2, code)) if code else frame.image
            t2 = time.perf_counter()
            small = cv2.resize(rgb, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
            t3 = time.perf_counter()
            backend.infer(small[None])
            t4 = time.perf_counter()
            if i == warmup:
                t_start = t0
            if i >= warmup:
                for name, (a, b) in zip(stages, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4))):
                    stages[name].append((b - a) * 1e3)
        wall = time.perf_counter() - t_start
    return {
        "frames": frames,
        "fps": round(frames / wall, 3),
        "stages_p50_ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
    }


def interleaved_frames(
    rgb_backend: Any, raw_backend: Any, raw_bundle: Any, source_uri: str, size_hw: tuple[int, int], n: int
) -> tuple[float, float]:
    """p50 ms per frame of the plain loop's work and the raw-frame path's work (the runtime's
    frame check + infer of the uncopied frame) on the same grabbed frames, alternating frame
    by frame: the load-robust version of the frames/s comparison."""
    import cv2

    from edge_runtime.pipeline import make_preprocessor
    from edge_runtime.sources import open_source

    check = make_preprocessor(raw_bundle)
    t_naive, t_raw = [], []
    with open_source(source_uri, {}) as src:
        it = iter(src.frames())
        for i in range(n + 1):
            frame = next(it)
            t0 = time.perf_counter()
            code = _OPENCV_BAYER.get(str(frame.meta.get("pixel_format")))
            rgb = cv2.cvtColor(frame.image, getattr(cv2, code)) if code else frame.image
            rgb_backend.infer(cv2.resize(rgb, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)[None])
            t1 = time.perf_counter()
            raw_backend.infer(check(frame)[None])
            t2 = time.perf_counter()
            if i:  # the first pair warms up
                t_naive.append((t1 - t0) * 1e3)
                t_raw.append((t2 - t1) * 1e3)
    return float(np.median(t_naive)), float(np.median(t_raw))


def interleaved_model_only(
    rgb_backend: Any, rgb_bundle: Any, raw_backend: Any, raw_bundle: Any, n: int
) -> tuple[float, float]:
    """p50 ms of `infer` on each bundle's fixed input, calls alternating RGB, raw, RGB, raw ..."""
    from edge_runtime.bench import fixed_input

    x_rgb, x_raw = fixed_input(rgb_bundle), fixed_input(raw_bundle)
    rgb_backend.infer(x_rgb)
    raw_backend.infer(x_raw)
    t_rgb, t_raw = [], []
    for _ in range(n):
        for backend, x, out in ((rgb_backend, x_rgb, t_rgb), (raw_backend, x_raw, t_raw)):
            t0 = time.perf_counter()
            backend.infer(x)
            out.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t_rgb)), float(np.median(t_raw))


def pipeline_run(raw_bundle: Any, source_uri: str, threads: int | None) -> tuple[Any, Any]:
    """A factory for `bench_e2e` with `clipinspect bench`'s settings, plus the loaded backend."""
    from edge_runtime.runtime_config import load_runtime_config
    from edge_runtime.session import load_backend, open_session

    defaults = [
        "pipeline.inference_queue=0",
        "pipeline.drop_policy=block",
        "pipeline.stats_interval_s=0",
        "publish.uri=null://",
    ]
    cfg = load_runtime_config(
        None,
        defaults,
        {"bundle.path": str(raw_bundle.root), "source.uri": source_uri, "backend.intra_op_threads": threads},
    )
    backend, info = load_backend(raw_bundle, "ort-cpu", "fp32", **cfg.backend.options())
    return backend, (lambda: open_session(cfg, backend=backend, backend_info=info))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rgb-bundle", required=True, type=Path, help="model-size RGB bundle (the plain loop's model)")
    p.add_argument(
        "--raw-bundle", required=True, type=Path, help="raw-frame bundle of the same weights (the pipeline's)"
    )
    p.add_argument("--source", default=DEFAULT_SOURCE)
    p.add_argument("--frames", type=int, default=12, help="measured frames per round and side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads for both (default: ORT's)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from edge_runtime import bench
    from edge_runtime.bundle import load_bundle
    from edge_runtime.session import load_backend

    rgb_bundle, raw_bundle = load_bundle(args.rgb_bundle), load_bundle(args.raw_bundle)
    size = tuple(rgb_bundle.manifest.preprocess.image_size)
    naive_backend, _ = load_backend(
        rgb_bundle, "ort-cpu", "fp32", **({"intra_op_threads": args.threads} if args.threads else {})
    )
    raw_backend, factory = pipeline_run(raw_bundle, args.source, args.threads)
    rounds = []
    try:
        for r in range(args.rounds):
            # Model-only, the two bundles interleaved call by call: what the in-graph
            # preprocessing costs, with load changes hitting both sides alike.
            m_rgb, m_raw = interleaved_model_only(naive_backend, rgb_bundle, raw_backend, raw_bundle, args.frames)
            model_ratio = m_raw / m_rgb
            print(
                f"round {r + 1}/{args.rounds}: model-only p50 raw-frame {m_raw:.1f} ms / RGB {m_rgb:.1f} ms = {model_ratio:.3f}",
                flush=True,
            )
            f_naive, f_raw = interleaved_frames(naive_backend, raw_backend, raw_bundle, args.source, size, args.frames)  # type: ignore[arg-type]
            print(
                f"round {r + 1}/{args.rounds}: per frame, alternating: plain loop {f_naive:.1f} ms, raw-frame path {f_raw:.1f} ms -> {f_naive / f_raw:.2f}x",
                flush=True,
            )
            naive = naive_loop(naive_backend, args.source, size, args.frames)  # type: ignore[arg-type]
            pipe = bench.bench_e2e(factory, frames=args.frames, warmup=2, progress=False)
            ratio = pipe["fps"] / naive["fps"] if naive["fps"] else float("nan")
            rounds.append(
                {
                    "naive": naive,
                    "pipeline": {
                        "fps": pipe["fps"],
                        "stages_p50_ms": {k: v["p50_ms"] for k, v in pipe["stages"].items()},
                    },
                    "fps_ratio": round(ratio, 3),
                    "model_p50_ms": {"rgb": round(m_rgb, 3), "raw": round(m_raw, 3)},
                    "model_p50_ratio": round(model_ratio, 4),
                    "per_frame_p50_ms": {"plain_loop": round(f_naive, 3), "raw_frame": round(f_raw, 3)},
                    "per_frame_speedup": round(f_naive / f_raw, 4),
                }
            )
            print(
                f"round {r + 1}/{args.rounds}: plain loop {naive['fps']:.2f} frames/s {naive['stages_p50_ms']}  |  "
                f"raw-frame pipeline {pipe['fps']:.2f} frames/s  ->  {ratio:.2f}x",
                flush=True,
            )
    finally:
        naive_backend.close()
        raw_backend.close()
    median = float(np.median([r["fps_ratio"] for r in rounds]))
    model_median = float(np.median([r["model_p50_ratio"] for r in rounds]))
    print(
        f"model-only p50, raw-frame bundle / model-size RGB bundle: median {model_median:.3f} over {len(rounds)} rounds"
    )
    frame_median = float(np.median([r["per_frame_speedup"] for r in rounds]))
    print(
        f"per-frame work, plain loop / raw-frame path (alternating frames): median {frame_median:.2f}x over {len(rounds)} rounds"
    )
    print(
        f"pipeline / plain loop frames/s: median {median:.2f}x over {len(rounds)} rounds "
        f"({platform.machine()}, {platform.processor() or 'cpu'}; shared machine: ratios, not absolute figures)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "source": args.source,
                    "rounds": rounds,
                    "median_fps_ratio": median,
                    "median_model_p50_ratio": model_median,
                    "median_per_frame_speedup": frame_median,
                    "host": bench.host_info(),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
