"""Input size vs cost: ViT-B/16 and ViT-L/14-336 at 224/336/518 (README "Input sizes" table).

    python benchmarks/bench_sizes.py [--archs vit-b-16,vit-l-14-336] [--sizes 224,336,518]
                                     [--rounds 3] [--threads 2] [--budget-s 60] [--json OUT]

For each (arch, size): a RANDOM-weight CLIP of that architecture (train.clip_presets), loaded at
the size through the same position-embedding interpolation training uses
(train.clip_loading.load_clip(image_size=...)), wrapped in AnomalyCLIP (no LoRA: after a merge
the graph is the same), then

- tokens       (size / patch)^2 + 1
- GFLOPs       counted with torch.utils.flop_counter on the forward at batch 1 (2 FLOPs per
               multiply-add), split into weight GEMMs (Linear, patch Conv) and attention
               (QK^T and attn*V, activation x activation)
- CPU p50      ONNX Runtime CPU on the exported graph (export.onnx_export.export_onnx, the
               bundle's exporter), `--threads` intra-op threads, after one warm-up run;
               rounds are cut down so one (arch, size) stays near `--budget-s`, and
               `--measure-up-to-gflops` skips measuring (and exporting) bigger models: their
               p50 is then ESTIMATED by scaling the largest measured model of the same arch by
               GFLOPs, and the table says so
- Orin Nano    expected TensorRT ms, from counted FLOPs and published peaks (see ORIN_* below)

A size that is not a multiple of the patch size is refused by training (the last pixels would
never be seen), so it is rounded DOWN to the patch grid here and the table shows the size used
(ViT-B/16 at 518 runs at 512).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_sizes")

# Jetson Orin Nano 8GB "Super" (JetPack 6.1+, 25 W mode), NVIDIA datasheet: 67 INT8 TOPS
# *sparse*, i.e. 33.4 dense; 8 Ampere SMs (32 tensor cores) at 1.02 GHz -> FP16 dense tensor
# peak 8 SM x 1024 FMA/clk x 2 x 1.02 GHz = 16.7 TFLOPS; LPDDR5 102 GB/s. (15 W original mode:
# 625 MHz, 40 TOPS sparse, 68 GB/s: multiply the estimates below by about 1.6.)
ORIN_FP16_TFLOPS = 16.7
ORIN_INT8_TOPS = 33.4
ORIN_GBPS = 102.0
# Assumed share of those peaks that TensorRT reaches on a ViT at batch 1, as a range: FP16
# 15-30 % of the dense tensor peak (2.5-5 TFLOP/s: ViT GEMMs are large, 197-1370 rows x
# 768-4096; LayerNorm, Softmax and GELU are memory-bound extras; a small CNN such as YOLOv8n
# reaches only ~2.5 effective INT8 TOPS on this board, hokwangchoi.com Apr 2026), and 10-20 %
# of the dense INT8 peak for the quantized weight GEMMs (Q/DQ reformatting, per-channel scales).
FP16_EFFICIENCY = (0.15, 0.30)
INT8_EFFICIENCY = (0.10, 0.20)


@dataclass
class Row:
    arch: str
    size: int
    patch: int
    tokens: int
    params_m: float
    gflops: float
    gflops_attention: float
    cpu_p50_ms: float | None = None
    cpu_rounds: int = 0
    cpu_estimated: bool = False
    orin_fp16_ms: tuple[float, float] = (0.0, 0.0)  # (pessimistic, optimistic efficiency)
    orin_int8_ms: tuple[float, float] = (0.0, 0.0)


def count_flops(model: Any, size: int) -> tuple[float, float]:
    """(total GFLOPs, attention-matmul GFLOPs) of one forward at batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        text = model.text_embeddings()
        with FlopCounterMode(display=False) as counter:
            model(x, text)
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    total = sum(by_op.values())
    # HF CLIP eager attention: QK^T and attn*V are batched matmuls (aten.bmm); Linear is addmm/mm
    attention = sum(v for k, v in by_op.items() if "bmm" in k)
    return total / 1e9, attention / 1e9


def orin_estimate(row: Row) -> tuple[tuple[float, float], tuple[float, float]]:
    """((FP16 ms slow, fast), (INT8 ms slow, fast)): compute time at the assumed efficiencies
    (1 TFLOPS = 1 GFLOP per ms), floored by reading the vision weights once from LPDDR5.
    INT8: weight GEMMs in INT8, attention MatMuls and Softmax in FP16 (what calibration/qdq.py
    quantizes; TensorRT's fused INT8 MHA stops at 512 tokens anyway)."""
    weight_bytes_fp16 = row.params_m * 1e6 * 2
    weight_gemm = row.gflops - row.gflops_attention
    fp16, int8 = [], []
    for e16, e8 in zip(FP16_EFFICIENCY, INT8_EFFICIENCY):
        fp16.append(max(row.gflops / (ORIN_FP16_TFLOPS * e16), weight_bytes_fp16 / (ORIN_GBPS * 1e6)))
        int8.append(
            max(
                weight_gemm / (ORIN_INT8_TOPS * e8) + row.gflops_attention / (ORIN_FP16_TFLOPS * e16),
                weight_bytes_fp16 / 2 / (ORIN_GBPS * 1e6),
            )
        )
    return (round(fp16[0], 1), round(fp16[1], 1)), (round(int8[0], 1), round(int8[1], 1))


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_interleaved(
    models: Sequence[tuple[Path, int, int]], threads: int, rounds: int, budget_s: float
) -> list[tuple[float, int]]:
    """[(p50 ms, runs)] for (onnx, size, embed_dim) models timed round-robin (one run of each
    per round, after one warm-up each), so load from other work hits every size alike and the
    ratios between sizes hold even when absolute numbers drift. Rounds are cut so that the
    slowest model's timing stays near `budget_s`."""
    rng = np.random.default_rng(0)
    sessions, feeds, first = [], [], []
    for path, size, dim in models:
        sess = _session(path, threads)
        feed = {
            "image": rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8),
            "text_embeddings": rng.standard_normal((2, dim)).astype(np.float32),
        }
        t0 = time.perf_counter()
        sess.run(None, feed)  # warm-up
        first.append(time.perf_counter() - t0)
        sessions.append(sess)
        feeds.append(feed)
    n = max(1, min(rounds, int(budget_s / max(max(first), 1e-3))))
    times: list[list[float]] = [[] for _ in models]
    for _ in range(n):
        for i, (sess, feed) in enumerate(zip(sessions, feeds)):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [(statistics.median(t), n) for t in times]


def bench_arch(arch: str, sizes: Sequence[int], work: Path, args: argparse.Namespace) -> list[Row]:
    import torch

    from export.onnx_export import export_onnx
    from train.clip_loading import load_clip
    from train.clip_presets import make_clip_folder
    from train.model import AnomalyCLIP

    folder = make_clip_folder(work / arch, arch=arch, seed=0)
    rows: list[Row] = []
    to_time: list[tuple[Row, tuple[Path, int, int]]] = []
    for wanted in sizes:
        loaded = load_clip(folder)
        patch = int(loaded.model.config.vision_config.patch_size)
        size = wanted - wanted % patch
        loaded = load_clip(folder, image_size=size)
        model = AnomalyCLIP(loaded.model, loaded.tokenizer, image_size=loaded.image_size).eval()
        vision_params = sum(p.numel() for p in loaded.model.vision_model.parameters())
        gflops, attention = count_flops(model, size)
        row = Row(
            arch,
            size,
            patch,
            (size // patch) ** 2 + 1,
            round(vision_params / 1e6, 1),
            round(gflops, 3),
            round(attention, 3),
        )
        row.orin_fp16_ms, row.orin_int8_ms = orin_estimate(row)
        if gflops <= args.measure_up_to_gflops:
            onnx_path = work / f"{arch}-{size}.onnx"
            with torch.no_grad():
                text = model.text_embeddings().numpy()
            export_onnx(
                model, onnx_path, image_size=loaded.image_size, mean=loaded.mean, std=loaded.std, text_embeddings=text
            )
            to_time.append((row, (onnx_path, size, int(text.shape[1]))))
        del model, loaded
        log.info("%s", row)
        rows.append(row)
    if to_time:
        timed = time_interleaved([m for _, m in to_time], args.threads, args.rounds, args.budget_s)
        for (row, (path, _, _)), (p50, n) in zip(to_time, timed):
            row.cpu_p50_ms, row.cpu_rounds = round(p50, 2), n
            path.unlink()
    measured = [r for r in rows if r.cpu_p50_ms is not None]
    for r in rows:
        if r.cpu_p50_ms is None and measured:
            ref = max(measured, key=lambda m: m.gflops)
            r.cpu_p50_ms, r.cpu_estimated = round(ref.cpu_p50_ms * r.gflops / ref.gflops, 2), True
    return rows


def markdown(rows: Sequence[Row], threads: int) -> str:
    head = (
        "| model | input px | tokens | GFLOPs (attention) | CPU p50 ms, ORT FP32, "
        f"{threads} threads | CPU time / GFLOPs vs the arch's first size | Orin Nano FP16 ms (expected) | "
        "Orin Nano INT8 ms (expected) |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    base: dict[str, Row] = {}
    for r in rows:
        b = base.setdefault(r.arch, r)
        ratio = (
            "-"
            if not (r.cpu_p50_ms and b.cpu_p50_ms)
            else (f"{r.cpu_p50_ms / b.cpu_p50_ms:.2f}x / {r.gflops / b.gflops:.2f}x")
        )
        cpu = (
            "-"
            if r.cpu_p50_ms is None
            else (
                f"~{r.cpu_p50_ms:.0f} (estimated from GFLOPs)"
                if r.cpu_estimated
                else f"{r.cpu_p50_ms:.0f} ({r.cpu_rounds} runs)"
            )
        )
        lines.append(
            f"| {r.arch} | {r.size} | {r.tokens} | {r.gflops:.1f} ({r.gflops_attention:.1f}) | {cpu} | {ratio} | "
            f"{r.orin_fp16_ms[1]:.1f}–{r.orin_fp16_ms[0]:.1f} | {r.orin_int8_ms[1]:.1f}–{r.orin_int8_ms[0]:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="vit-b-16,vit-l-14-336")
    p.add_argument("--sizes", default="224,336,518")
    p.add_argument("--rounds", type=int, default=3, help="timed runs per model after one warm-up (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=60.0, help="cut rounds so one model's timing stays near this")
    p.add_argument(
        "--measure-up-to-gflops",
        type=float,
        default=float("inf"),
        help="estimate (do not export and time) models above this many GFLOPs",
    )
    p.add_argument("--work", default=None, help="scratch folder (default: a temp folder, removed)")
    p.add_argument("--json", default=None, help="write the rows as JSON here")
    p.add_argument("--from-json", default=None, help="only print the table of a saved --json (Orin figures recomputed)")
    args = p.parse_args(argv)
    if args.from_json:
        rows = [Row(**r) for r in json.loads(Path(args.from_json).read_text(encoding="utf-8"))]
        for r in rows:
            r.orin_fp16_ms, r.orin_int8_ms = orin_estimate(r)
        print(markdown(rows, args.threads))
        return 0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("train", "export", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for arch in args.archs.split(","):
            rows += bench_arch(arch.strip(), sizes, Path(tmp), args)
    table = markdown(rows, args.threads)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
