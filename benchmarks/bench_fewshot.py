"""Latency cost of the few-shot memory bank: model-only p50 of a plain bundle vs the same
model exported with a memory_bank input and enrolled with K good images, side by side in
one process (rounds alternate, so load from other work hits both alike).

    python -m export.random_bundle /tmp/b16 --arch vit-b-16
    python -m export.random_bundle /tmp/b16k4 --arch vit-b-16 --bank-shots 4 --merged-dir /tmp/b16-merged
    python benchmarks/bench_fewshot.py /tmp/b16 /tmp/b16k4 --images ../shared/data/mvtec_ad/bottle/train/good
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plain")
    p.add_argument("fewshot")
    p.add_argument("--images", required=True, help="good images for the bank")
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)

    from edge_runtime.backends.onnxruntime import OrtBackend
    from edge_runtime.bundle import load_bundle
    from edge_runtime.fewshot import build_bank, draw_shots, list_good_images

    plain_b, fs_b = load_bundle(args.plain), load_bundle(args.fewshot)
    plain, fs = OrtBackend(intra_op_threads=args.threads), OrtBackend(intra_op_threads=args.threads)
    plain.load(plain_b), fs.load(fs_b)
    fs.set_memory_bank(build_bank(fs, fs_b, draw_shots(list_good_images(args.images), args.shots, 0)))
    h, w = plain_b.manifest.preprocess.image_size
    x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    times: dict[str, list[float]] = {"plain": [], f"K={args.shots}": []}
    for backend in (plain, fs):
        for _ in range(3):
            backend.infer(x)
    for _ in range(args.rounds):
        for name, backend in zip(times, (plain, fs)):
            for _ in range(args.iterations):
                t0 = time.perf_counter()
                backend.infer(x)
                times[name].append(1000 * (time.perf_counter() - t0))
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    print(
        f"{plain_b.manifest.model_id} {h}x{w}, ORT CPU fp32, {platform.processor() or platform.machine()}, "
        f"{args.rounds} alternating rounds x {args.iterations} iterations"
    )
    for k, v in p50.items():
        print(f"  {k:<8} model-only p50 {v:8.2f} ms  (p90 {np.percentile(times[k], 90):.2f} ms)")
    a, b = p50.values()
    print(f"  ratio K={args.shots} / plain: {b / a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
