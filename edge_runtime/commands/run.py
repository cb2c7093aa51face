"""`clipinspect run`: frames from a source through a bundle's model to a publisher, until the
source ends, a limit is reached or SIGINT/SIGTERM (which drain the queues and exit 0)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.cli import Command
from edge_runtime.runtime_flags import add_config_file, add_config_flags, config_from_args

if TYPE_CHECKING:
    from edge_runtime.pipeline import PipelineResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `run` flags: the shared runtime-config flags, then the run's own limits and summary."""
    add_config_flags(p, "bundle", "trusted_keys", "source", "publish", "backend", "precision")
    add_config_file(p)
    add_config_flags(p, "threshold")
    p.add_argument("--max-frames", type=int, help="stop after capturing N frames")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--summary-json", type=Path, help="also write the run summary (counts, per-stage latency) as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the inspection loop the flags and config describe; print (and optionally write) its summary."""
    from edge_runtime.session import open_session, run_pipeline

    cfg = config_from_args(args)
    with open_session(cfg) as session:
        result = run_pipeline(session, max_frames=args.max_frames, duration_s=args.duration)
        publisher_stats = dict(session.publisher.stats())
        source_stats = dict(session.source.stats())
    summary = result.as_dict() | {
        "backend": session.backend_info,
        "source_stats": source_stats,
        "publisher_stats": publisher_stats,
    }
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    # Verdicts on stdout stay a clean JSON-lines stream: the summary then goes to stderr.
    print(
        format_summary(result, source_stats), file=sys.stderr if cfg.publish.uri.startswith("stdout:") else sys.stdout
    )
    return 0


# Camera counters of the source stats (edge_runtime/sources/camera.py), as the summary names them.
CAMERA_COUNTERS = (
    ("trigger_edges", "trigger edges"),
    ("missed_triggers", "missed triggers"),
    ("stream_lost", "stream lost"),
    ("stream_dropped", "stream dropped"),
)


def camera_line(source_stats: Mapping[str, Any] | None) -> str | None:
    """The camera's missed-trigger and stream counters as one line, or None for a source without them.

    A counter that was not counted (None) shows as "n/a"; the trigger counters add why, from
    `missed_triggers_source` (e.g. "n/a (disabled)").

    Args:
        source_stats: the source's stats() at the end of the run.

    Returns:
        "camera: trigger edges 16, missed triggers 8 (device_counters), stream lost 0, ..." or None.
    """
    stats = source_stats or {}
    if not any(key in stats for key, _ in CAMERA_COUNTERS):
        return None
    why = stats.get("missed_triggers_source")
    parts = []
    for key, label in CAMERA_COUNTERS:
        if key not in stats:
            continue
        value = stats[key]
        if value is None:
            value = f"n/a ({why})" if why and key in ("trigger_edges", "missed_triggers") else "n/a"
        elif key == "missed_triggers" and why:
            value = f"{value} ({why})"
        parts.append(f"{label} {value}")
    return "camera: " + ", ".join(parts)


def format_summary(result: PipelineResult, source_stats: Mapping[str, Any] | None = None) -> str:
    """The run's summary for a person: counts, reasons not judged, camera counters, process
    growth, stage latency.

    Args:
        result: what the pipeline returned.
        source_stats: the source's stats(); the camera counters are shown when it has them.

    Returns:
        Lines of text, no trailing newline.
    """
    lines = [
        f"frames: captured {result.captured}, inferred {result.inferred}, published {result.published}, "
        f"dropped {result.dropped}; OK {result.ok}, NG {result.ng}, SKIPPED {result.skipped}, ERROR {result.errors}; "
        f"{result.fps:.2f} frames/s over {result.wall_s:.1f} s ({result.stop_reason})"
    ]
    reasons = result.records.get("by_reason", {}) if result.records else {}
    if reasons:
        lines.append("not judged: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    camera = camera_line(source_stats)
    if camera:
        lines.append(camera)
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
