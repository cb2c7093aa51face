"""`clipinspect run`: frames from a source through a bundle's model to a publisher, until the
source ends, a limit is reached or SIGINT/SIGTERM (which drain the queues and exit 0)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.backends import backend_help
from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, help="bundle folder (overrides bundle.path)")
    p.add_argument("--trusted-keys", type=Path, metavar="DIR", help="only run bundles signed by a key in DIR (overrides bundle.trusted_keys)")
    p.add_argument("--source", help="frame source URI: spinnaker://SERIAL, gentl://..., cv://0, folder://DIR, synthetic://")
    p.add_argument("--publish", help="publisher URI: mqtt://host:1883/prefix, jsonl://FILE, stdout://")
    p.add_argument("--backend", help=backend_help())
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="model precision (default fp32)")
    p.add_argument("--config", type=Path, help="runtime config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. pipeline.drop_policy=block")
    p.add_argument("--threshold", type=float, help="override the bundle's OK/NG threshold")
    p.add_argument("--max-frames", type=int, help="stop after capturing N frames")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--summary-json", type=Path, help="also write the run summary (counts, per-stage latency) as JSON")


def run(args: argparse.Namespace) -> int:
    from edge_runtime.runtime_config import load_runtime_config
    from edge_runtime.session import open_session, run_pipeline

    cfg = load_runtime_config(
        args.config,
        args.overrides,
        {
            "bundle.path": args.bundle,
            "bundle.trusted_keys": args.trusted_keys,
            "source.uri": args.source,
            "publish.uri": args.publish,
            "backend.name": args.backend,
            "backend.precision": args.precision,
            "threshold": args.threshold,
        },
    )
    with open_session(cfg) as session:
        result = run_pipeline(session, max_frames=args.max_frames, duration_s=args.duration)
        publisher_stats = dict(session.publisher.stats())
        source_stats = dict(session.source.stats())
    summary = result.as_dict() | {"backend": session.backend_info, "source_stats": source_stats, "publisher_stats": publisher_stats}
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    # Verdicts on stdout stay a clean JSON-lines stream: the summary then goes to stderr.
    print(format_summary(result), file=sys.stderr if cfg.publish.uri.startswith("stdout:") else sys.stdout)
    return 0


def format_summary(result) -> str:
    lines = [
        f"frames: captured {result.captured}, inferred {result.inferred}, published {result.published}, "
        f"dropped {result.dropped}; OK {result.ok}, NG {result.ng}, SKIPPED {result.skipped}, ERROR {result.errors}; "
        f"{result.fps:.2f} frames/s over {result.wall_s:.1f} s ({result.stop_reason})"
    ]
    reasons = result.records.get("by_reason", {}) if result.records else {}
    if reasons:
        lines.append("not judged: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    proc = result.process or {}
    if proc.get("end"):
        start, end = proc["start"], proc["end"]
        growth = proc.get("rss_growth_after_warmup_pct")
        lines.append(
            f"process: RSS {start['rss_mb']} -> {end['rss_mb']} MB (peak {proc.get('peak_rss_mb')}, "
            f"{'n/a' if growth is None else f'{growth:+.1f} %'} after warm-up), fds {start['fds']} -> {end['fds']}, threads {start['threads']} -> {end['threads']}"
        )
    stages = result.stats.get("stages", {})
    if stages:
        lines.append(f"{'stage':<14}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for name, s in stages.items():
            lines.append(f"{name:<14}{s['p50_ms']:>10.2f}{s['p90_ms']:>10.2f}{s['p99_ms']:>10.2f}{s['max_ms']:>10.2f}")
    return "\n".join(lines)


COMMAND = Command(help="run inspection: source -> model -> verdicts -> publisher", add_arguments=add_arguments, run=run)
