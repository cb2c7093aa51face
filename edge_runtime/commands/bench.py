"""`clipinspect bench`: model-only and end-to-end latency per stage, fps and drops; JSON + PNG.

    clipinspect bench --bundle B                                  # ort-cpu fp32, both modes
    clipinspect bench --bundle B --compare ort-cpu:fp32,ort-cpu:int8 --out bench/
    clipinspect bench --bundle B --backend trt --precision fp16 --source spinnaker://123 --publish mqtt://broker/line1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_runtime.backends import backend_help
from edge_runtime.cli import Command

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, help="bundle folder (overrides bundle.path)")
    p.add_argument("--backend", help=backend_help())
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="precision (default fp32)")
    p.add_argument("--compare", metavar="B:P,B:P", help="several backend:precision runs in one go, e.g. ort-cpu:fp32,ort-cpu:int8")
    p.add_argument("--mode", choices=("both", "model", "e2e"), default="both", help="model-only, end-to-end, or both (default)")
    p.add_argument("--iterations", type=int, default=100, help="model-only timed iterations (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations/frames (default 10)")
    p.add_argument("--frames", type=int, default=100, help="end-to-end measured frames (default 100)")
    p.add_argument("--rounds", type=int, default=1, help="alternate model-only and end-to-end this many times (robust ratios on a busy machine)")
    p.add_argument("--source", help="end-to-end source (default: unpaced synthetic frames at the model's size)")
    p.add_argument("--publish", help="end-to-end publisher (default null:// = no publishing cost); e.g. jsonl://FILE, mqtt://...")
    p.add_argument("--intra-op-threads", type=int, help="ONNX Runtime intra-op threads (default: ORT's, one per core)")
    p.add_argument("--config", type=Path, help="runtime config YAML (pipeline, source and publish options)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--out", type=Path, default=Path("bench"), help="folder for bench.json and bench.png (default ./bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from edge_runtime import bench
    from edge_runtime.bundle import load_bundle
    from edge_runtime.errors import ConfigError
    from edge_runtime.runtime_config import load_runtime_config
    from edge_runtime.session import load_backend, open_session

    if args.rounds < 1:
        raise ConfigError("--rounds must be >= 1")
    if args.compare and (args.backend or args.precision):
        raise ConfigError("give either --compare or --backend/--precision, not both")
    # The bench's own defaults: hand-off queue so frames never age in a queue, no stats log.
    defaults = ["pipeline.inference_queue=0", "pipeline.drop_policy=block", "pipeline.stats_interval_s=0", "publish.uri=null://"]
    cfg = load_runtime_config(
        args.config,
        defaults + list(args.overrides),
        {
            "bundle.path": args.bundle,
            "source.uri": args.source,
            "publish.uri": args.publish,
            "backend.name": args.backend,
            "backend.precision": args.precision,
            "backend.intra_op_threads": args.intra_op_threads,
        },
    )
    if cfg.bundle.path is None:
        raise ConfigError("no bundle given (--bundle or bundle.path)")
    from edge_runtime.signing import resolve_trusted_keys

    bundle = load_bundle(cfg.bundle.path, verify=cfg.bundle.verify, trusted_keys=resolve_trusted_keys(None, cfg.bundle.trusted_keys))
    if not cfg.source.uri:
        cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, uri=bench.default_source(bundle)))
    specs = bench.BenchSpec.parse_list(args.compare) if args.compare else [bench.BenchSpec(cfg.backend.name, cfg.backend.precision)]
    progress = not args.no_progress
    runs = []
    for spec in specs:
        run_cfg = bench.replace_backend(cfg, spec)
        backend, info = load_backend(bundle, spec.backend, spec.precision, **run_cfg.backend.options())
        try:
            record: dict = {"label": spec.label, "backend": spec.backend, "precision": spec.precision, "backend_info": info}
            models, e2es = [], []
            # Rounds alternate model-only and end-to-end so that a load change on a shared
            # machine hits both sides alike; the ratios stay meaningful.
            for r in range(args.rounds):
                tag = f" round {r + 1}/{args.rounds}" if args.rounds > 1 else ""
                warm = args.warmup if r == 0 else min(args.warmup, 2)
                if args.mode in ("both", "model"):
                    models.append(bench.bench_model(backend, bundle, iterations=_share(args.iterations, args.rounds, r), warmup=warm, progress=progress, label=f"{spec.label} model-only{tag}"))
                if args.mode in ("both", "e2e"):
                    e2es.append(
                        bench.bench_e2e(
                            lambda: open_session(run_cfg, backend=backend, backend_info=info),
                            frames=max(2, _share(args.frames, args.rounds, r)),
                            warmup=warm,
                            progress=progress,
                            label=f"{spec.label} end-to-end{tag}",
                        )
                    )
            if models:
                record["model"] = bench.merge_model(models)
            if e2es:
                record["e2e"] = bench.merge_e2e(e2es)
            record["ratios"] = bench.ratios(record.get("model"), record.get("e2e"))
            if len(models) > 1 and len(models) == len(e2es):
                record["ratios"].update(bench.round_ratios(models, e2es))
            runs.append(record)
        finally:
            backend.close()
    settings = {
        "mode": args.mode,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "frames": args.frames,
        "rounds": args.rounds,
        "source": cfg.source.uri,
        "publish": cfg.publish.uri,
        "pipeline": dataclasses.asdict(cfg.pipeline),
        "intra_op_threads": cfg.backend.intra_op_threads,
    }
    doc = bench.result_document(bundle, runs, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "bench.json"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    png_path = bench.write_plot(runs, args.out / "bench.png")
    for r in runs:
        print(bench.format_stage_table(r))
    print(bench.format_table(runs))
    print(f"wrote {json_path} and {png_path}")
    sys.stdout.flush()
    return 0


def _share(total: int, rounds: int, index: int) -> int:
    """Round `index`'s part of `total` (the first rounds take the remainder)."""
    return total // rounds + (1 if index < total % rounds else 0)


COMMAND = Command(help="benchmark a bundle: model-only and end-to-end latency per stage, fps, drops", add_arguments=add_arguments, run=run)
