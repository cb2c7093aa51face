"""`clipinspect bench`: model-only and end-to-end latency per stage, fps and drops; JSON + PNG.

clipinspect bench --bundle B                                  # ort-cpu fp32, both modes
clipinspect bench --bundle B --compare ort-cpu:fp32,ort-cpu:int8 --out bench-results/
clipinspect bench --bundle B --backend trt --precision fp16 --source spinnaker://123 --publish mqtt://broker/line1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge_runtime.cli import Command
from edge_runtime.errors import ConfigError
from edge_runtime.runtime_flags import add_config_file, add_config_flags, config_from_args

log = logging.getLogger(__name__)

# Results land in a git-ignored folder (.gitignore) unless --out names another.
DEFAULT_OUT = Path("bench-results")
# The bench's own defaults, applied like `--set` before the user's: a hand-off queue so frames
# never age in a queue, no stats log, and no publishing cost unless --publish asks for one.
BENCH_DEFAULTS = (
    "pipeline.inference_queue=0",
    "pipeline.drop_policy=block",
    "pipeline.stats_interval_s=0",
    "publish.uri=null://",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `bench` flags: the shared runtime-config flags plus what and how long to measure."""
    add_config_flags(p, "bundle", "backend", "precision")
    p.add_argument(
        "--compare", metavar="B:P,B:P", help="several backend:precision runs in one go, e.g. ort-cpu:fp32,ort-cpu:int8"
    )
    p.add_argument(
        "--mode", choices=("both", "model", "e2e"), default="both", help="model-only, end-to-end, or both (default)"
    )
    p.add_argument("--iterations", type=int, default=100, help="model-only timed iterations (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations/frames (default 10)")
    p.add_argument("--frames", type=int, default=100, help="end-to-end measured frames (default 100)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate model-only and end-to-end this many times (robust ratios on a busy machine)",
    )
    add_config_flags(
        p,
        "source",
        "publish",
        "intra_op_threads",
        help={
            "source": "end-to-end source (default: unpaced synthetic frames at the model's size)",
            "publish": "end-to-end publisher (default null:// = no publishing cost); e.g. jsonl://FILE, mqtt://...",
        },
    )
    add_config_file(
        p,
        config_help="runtime config YAML (source, backend and pipeline options); bench keeps its own "
        "pipeline.inference_queue=0, drop_policy=block, stats_interval_s=0 and publish.uri=null:// "
        "(a station config never makes bench publish to the plant broker) unless --set/--publish say otherwise",
        set_help="override a config key",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for bench.json and bench.png (default ./{DEFAULT_OUT})"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def run(args: argparse.Namespace) -> int:
    """Measure every backend:precision asked for, then write bench.json + bench.png and print the tables."""
    from edge_runtime import bench

    cfg, bundle = _load(args)
    specs = (
        bench.BenchSpec.parse_list(args.compare)
        if args.compare
        else [bench.BenchSpec(cfg.backend.name, cfg.backend.precision)]
    )
    runs = [_bench_spec(args, cfg, bundle, spec) for spec in specs]
    json_path, png_path = _write_results(args.out, bench.result_document(bundle, runs, _settings(args, cfg)), runs)
    for r in runs:
        print(bench.format_stage_table(r))
    print(bench.format_table(runs))
    print(f"wrote {json_path} and {png_path}")
    sys.stdout.flush()
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(config, bundle): the flags checked, the bench's defaults applied, the bundle loaded and
    the end-to-end source defaulted to synthetic frames at the bundle's size."""
    from edge_runtime import bench
    from edge_runtime.session import load_configured_bundle

    if args.rounds < 1:
        raise ConfigError("--rounds must be >= 1")
    if args.compare and (args.backend or args.precision):
        raise ConfigError("give either --compare or --backend/--precision, not both")
    cfg = config_from_args(args, BENCH_DEFAULTS)
    bundle = load_configured_bundle(cfg)
    if not cfg.source.uri:
        cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, uri=bench.default_source(bundle)))
    return cfg, bundle


def _bench_spec(args: argparse.Namespace, cfg: Any, bundle: Any, spec: Any) -> dict[str, Any]:
    """One backend:precision's record: load the backend once, measure all rounds, merge them."""
    from edge_runtime import bench
    from edge_runtime.session import load_backend

    run_cfg = bench.replace_backend(cfg, spec)
    backend, info = load_backend(bundle, spec.backend, spec.precision, **run_cfg.backend.options())
    try:
        models, e2es = _rounds(args, run_cfg, bundle, spec, backend, info)
    finally:
        backend.close()
    record: dict[str, Any] = {
        "label": spec.label,
        "backend": spec.backend,
        "precision": spec.precision,
        "backend_info": info,
    }
    if models:
        record["model"] = bench.merge_model(models)
    if e2es:
        record["e2e"] = bench.merge_e2e(e2es)
    record["ratios"] = bench.ratios(record.get("model"), record.get("e2e"))
    if len(models) > 1 and len(models) == len(e2es):
        record["ratios"].update(bench.round_ratios(models, e2es))
    return record


def _rounds(
    args: argparse.Namespace, run_cfg: Any, bundle: Any, spec: Any, backend: Any, info: Any
) -> tuple[list, list]:
    """(model-only results, end-to-end results), one of each per round as the mode asks."""
    from edge_runtime import bench
    from edge_runtime.session import open_session

    progress = not args.no_progress
    models, e2es = [], []
    # Rounds alternate model-only and end-to-end so that a load change on a shared
    # machine hits both sides alike; the ratios stay meaningful.
    for r in range(args.rounds):
        tag = f" round {r + 1}/{args.rounds}" if args.rounds > 1 else ""
        warm = args.warmup if r == 0 else min(args.warmup, 2)
        if args.mode in ("both", "model"):
            models.append(
                bench.bench_model(
                    backend,
                    bundle,
                    iterations=_share(args.iterations, args.rounds, r),
                    warmup=warm,
                    progress=progress,
                    label=f"{spec.label} model-only{tag}",
                )
            )
        if args.mode in ("both", "e2e"):
            e2es.append(
                bench.bench_e2e(
                    lambda: open_session(run_cfg, bundle=bundle, backend=backend, backend_info=info),
                    frames=max(2, _share(args.frames, args.rounds, r)),
                    warmup=warm,
                    progress=progress,
                    label=f"{spec.label} end-to-end{tag}",
                )
            )
    return models, e2es


def _settings(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """What the measurement ran under, recorded in bench.json."""
    return {
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


def _write_results(out: Path, doc: dict[str, Any], runs: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write `out`/bench.json and `out`/bench.png; returns both paths."""
    from edge_runtime import bench

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return json_path, bench.write_plot(runs, out / "bench.png")


def _share(total: int, rounds: int, index: int) -> int:
    """Round `index`'s part of `total` (the first rounds take the remainder)."""
    return total // rounds + (1 if index < total % rounds else 0)


COMMAND = Command(
    help="benchmark a bundle: model-only and end-to-end latency per stage, fps, drops",
    add_arguments=add_arguments,
    run=run,
)
