"""The verdict: score vs threshold -> OK/NG, and its versioned JSON payload (README documents it)."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, Mapping

SCHEMA = "clipinspect.verdict"
SCHEMA_VERSION = 1
STAGES = ("capture_wait", "preprocess", "inference", "postprocess", "queue")

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "schema_version": int,
    "frame_id": int,
    "camera_serial": str,
    "capture_ts_ns": int,
    "capture_time": str,
    "score": float,
    "threshold": float,
    "verdict": str,
    "bundle_sha256": str,
    "model_id": str,
    "backend": str,
    "precision": str,
    "latency_ms": dict,
    "heatmap": (str, type(None)),
}


def decide(score: float, threshold: float) -> str:
    """NG when the anomaly score reaches the threshold (>=, as F1-max thresholds are chosen)."""
    return "NG" if score >= threshold else "OK"


def make_verdict(
    *,
    frame_id: int,
    camera_serial: str,
    capture_ts_ns: int,
    score: float,
    threshold: float,
    bundle_sha256: str,
    model_id: str,
    backend: str,
    precision: str,
    latency_ms: Mapping[str, float],
    heatmap: str | None = None,
    wall_time_ns: int | None = None,
) -> dict[str, Any]:
    wall = time.time_ns() if wall_time_ns is None else wall_time_ns
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "frame_id": int(frame_id),
        "camera_serial": str(camera_serial),
        "capture_ts_ns": int(capture_ts_ns),
        "capture_time": datetime.fromtimestamp(wall / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds"),
        "score": float(score),
        "threshold": float(threshold),
        "verdict": decide(float(score), float(threshold)),
        "bundle_sha256": bundle_sha256,
        "model_id": model_id,
        "backend": backend,
        "precision": precision,
        "latency_ms": {k: round(float(v), 3) for k, v in latency_ms.items()},
        "heatmap": heatmap,
    }


def validate_verdict(payload: Mapping[str, Any]) -> list[str]:
    """Problems with a verdict payload (empty list = valid). Used by tests and subscribers."""
    problems = []
    for key, tp in _REQUIRED.items():
        if key not in payload:
            problems.append(f"missing '{key}'")
        elif tp is float:
            if not isinstance(payload[key], (int, float)) or isinstance(payload[key], bool) or not math.isfinite(payload[key]):
                problems.append(f"'{key}' must be a finite number")
        elif not isinstance(payload[key], tp):
            problems.append(f"'{key}' has type {type(payload[key]).__name__}")
    if problems:
        return problems
    if payload["schema"] != SCHEMA:
        problems.append(f"schema is {payload['schema']!r}, expected {SCHEMA!r}")
    if payload["schema_version"] > SCHEMA_VERSION:
        problems.append(f"schema_version {payload['schema_version']} is newer than {SCHEMA_VERSION}")
    if payload["verdict"] not in ("OK", "NG"):
        problems.append(f"verdict {payload['verdict']!r} is not OK/NG")
    elif payload["verdict"] != decide(payload["score"], payload["threshold"]):
        problems.append("verdict disagrees with score and threshold")
    return problems
