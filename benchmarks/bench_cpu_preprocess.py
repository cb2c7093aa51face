"""CPU preprocessing of a large frame for a model-size RGB bundle: before vs now, interleaved.

    python benchmarks/bench_cpu_preprocess.py [--width 4096 --height 2160] [--size 224] [--reps 30]

before: OpenCV demosaic at full resolution -> pyrDown while >= 2x -> INTER_AREA (the path
        `edge_runtime.preprocess.prepare` took until the raw-frame work)
now:    `prepare`: quad-binning to half resolution (Bayer) / 2x2 binning (RGB) while >= 2x
        -> INTER_AREA
Calls alternate before/now on the same frame, so the ratio holds on a busy machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def before(image: np.ndarray, size: int, pixel_format: str) -> np.ndarray:
    import cv2

    from edge_runtime.preprocess import to_rgb

    x = to_rgb(image, pixel_format)
    while x.shape[0] >= 2 * size and x.shape[1] >= 2 * size:
        x = cv2.pyrDown(x)
    return cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA)


def main(argv: Sequence[str] | None = None) -> int:
    import cv2

    from edge_runtime.preprocess import prepare
    from edge_runtime.sources.synthetic import mosaic

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--height", type=int, default=2160)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8), (0, 0), 4)
    for fmt, frame in (("BayerRG8", mosaic(rgb, "BayerRG8")), ("RGB8", rgb)):
        t_before, t_now = [], []
        for i in range(args.reps + 1):
            t0 = time.perf_counter()
            before(frame, args.size, fmt)
            t1 = time.perf_counter()
            prepare(frame, (args.size, args.size), pixel_format=fmt)
            t2 = time.perf_counter()
            if i:
                t_before.append((t1 - t0) * 1e3)
                t_now.append((t2 - t1) * 1e3)
        b, n = float(np.median(t_before)), float(np.median(t_now))
        print(
            f"{fmt} {args.width}x{args.height} -> {args.size}: before p50 {b:.2f} ms, now p50 {n:.2f} ms -> {b / n:.2f}x faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
