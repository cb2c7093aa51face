"""The verdict record: one per frame, versioned JSON (README documents it).

`verdict` is one of
  OK       judged, score < threshold;
  NG       judged, score >= threshold;
  SKIPPED  not judged because the runtime chose not to (drop policy under load): the part
           passed uninspected, the system itself is healthy;
  ERROR    not judged because the input or the result was unusable (undecodable file,
           incomplete camera image, wrong frame format, NaN/Inf or out-of-range score).
SKIPPED and ERROR records carry a machine-readable `reason` (REASONS) and a one-line `detail`,
and `score: null`. A PLC must never treat them as OK.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

SCHEMA = "clipinspect.verdict"
SCHEMA_VERSION = 2
STAGES = ("capture_wait", "preprocess", "inference", "postprocess", "queue")
KINDS = ("OK", "NG", "SKIPPED", "ERROR")
JUDGED = ("OK", "NG")

# reason code -> (verdict kind, meaning). Codes are stable API: add, never rename.
REASONS: dict[str, tuple[str, str]] = {
    "dropped_newest": ("SKIPPED", "drop policy 'newest': inference was behind and a newer frame took this one's place"),
    "undecodable": ("ERROR", "image bytes cannot be decoded (truncated, corrupt, not an image)"),
    "empty_file": ("ERROR", "image file of 0 bytes"),
    "image_too_large": ("ERROR", "image larger than source option max_pixels (decompression-bomb guard)"),
    "odd_size": ("ERROR", "image size differs from the stream's first frame"),
    "file_missing": ("ERROR", "file vanished between listing and reading"),
    "incomplete_image": ("ERROR", "camera delivered an incomplete buffer (lost packets, USB/GigE bandwidth)"),
    "bad_frame": ("ERROR", "frame has a dtype, shape, channel count or pixel format preprocessing cannot use"),
    "preprocess_failed": ("ERROR", "preprocessing raised an unexpected error for this frame"),
    "postprocess_failed": ("ERROR", "building the verdict raised an unexpected error for this frame"),
    "score_not_finite": ("ERROR", "the model returned NaN or Inf"),
    "score_out_of_range": ("ERROR", "the model returned a score outside [0, 1]"),
}
SCORE_SLACK = 1e-6  # float32 sigmoid/softmax rounding; anything further out of [0, 1] is an ERROR

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


def kind_of(reason: str) -> str:
    """SKIPPED or ERROR for a reason code; unknown codes (e.g. a FrameRejected reason from
    preprocessing) are input problems, hence ERROR."""
    return REASONS.get(reason, ("ERROR", ""))[0]


def score_problem(score: float) -> str | None:
    """The reason code when `score` cannot be judged, else None."""
    if not math.isfinite(score):
        return "score_not_finite"
    if score < -SCORE_SLACK or score > 1.0 + SCORE_SLACK:
        return "score_out_of_range"
    return None


def decide(score: float, threshold: float) -> str:
    """NG when the anomaly score reaches the threshold (>=, as F1-max thresholds are chosen);
    ERROR when the score is NaN/Inf or outside [0, 1] (never OK/NG)."""
    if score_problem(score) is not None:
        return "ERROR"
    return "NG" if score >= threshold else "OK"


def _head(frame_id: int, camera_serial: str, capture_ts_ns: int, wall_time_ns: int | None) -> dict[str, Any]:
    wall = time.time_ns() if wall_time_ns is None else wall_time_ns
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "frame_id": int(frame_id),
        "camera_serial": str(camera_serial),
        "capture_ts_ns": int(capture_ts_ns),
        "capture_time": datetime.fromtimestamp(wall / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds"),
    }


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
    """The record of a frame the model scored: OK/NG, or ERROR when the score is unusable.

    Args:
        frame_id, camera_serial, capture_ts_ns: the frame's identity, also the
            de-duplication key a subscriber uses (README, "Delivery guarantees").
        score: the model's image score in [0, 1].
        threshold: the bundle's threshold; score >= threshold is NG.
        bundle_sha256, model_id, backend, precision: what judged the frame.
        latency_ms: per-stage times, rounded to 1 µs.
        heatmap: where the heatmap overlay was written, if one was.
        wall_time_ns: capture wall-clock time (default now), for `capture_time`.

    Returns:
        The versioned verdict payload documented in README (`validate_verdict` accepts it).
    """
    score = float(score)
    problem = score_problem(score)
    return _head(frame_id, camera_serial, capture_ts_ns, wall_time_ns) | {
        "score": None if problem else score,
        "threshold": float(threshold),
        "verdict": "ERROR" if problem else decide(score, float(threshold)),
        "reason": problem,
        "detail": f"model score {score!r}" if problem else None,
        "bundle_sha256": bundle_sha256,
        "model_id": model_id,
        "backend": backend,
        "precision": precision,
        "latency_ms": {k: round(float(v), 3) for k, v in latency_ms.items()},
        "heatmap": None if problem else heatmap,
    }


def make_record(
    *,
    frame_id: int,
    camera_serial: str,
    capture_ts_ns: int,
    reason: str,
    detail: str,
    threshold: float,
    bundle_sha256: str,
    model_id: str,
    backend: str,
    precision: str,
    latency_ms: Mapping[str, float] | None = None,
    wall_time_ns: int | None = None,
) -> dict[str, Any]:
    """The SKIPPED/ERROR record of a frame that was not judged (no score).

    Args:
        reason: a reason code; `kind_of` maps it to SKIPPED or ERROR.
        detail: free text, squeezed to one line of at most 300 characters.
        (the rest): as for `make_verdict`.

    Returns:
        The payload, with `score` and `heatmap` null so a PLC never mistakes it for a verdict.
    """
    return _head(frame_id, camera_serial, capture_ts_ns, wall_time_ns) | {
        "score": None,
        "threshold": float(threshold),
        "verdict": kind_of(reason),
        "reason": reason,
        "detail": " ".join(str(detail).split())[:300],  # one line, bounded
        "bundle_sha256": bundle_sha256,
        "model_id": model_id,
        "backend": backend,
        "precision": precision,
        "latency_ms": {k: round(float(v), 3) for k, v in (latency_ms or {}).items()},
        "heatmap": None,
    }


def validate_verdict(payload: Mapping[str, Any]) -> list[str]:
    """Problems with a verdict payload (empty list = valid), schema versions 1 and 2.
    Used by tests and subscribers."""
    problems = []
    version = payload.get("schema_version")
    unjudged = version != 1 and payload.get("verdict") in ("SKIPPED", "ERROR")
    for key, tp in _REQUIRED.items():
        if key not in payload:
            problems.append(f"missing '{key}'")
        elif key == "score" and unjudged:
            if payload[key] is not None:
                problems.append(f"'score' must be null for {payload['verdict']}")
        elif tp is float:
            if (
                not isinstance(payload[key], (int, float))
                or isinstance(payload[key], bool)
                or not math.isfinite(payload[key])
            ):
                problems.append(f"'{key}' must be a finite number")
        elif not isinstance(payload[key], tp):
            problems.append(f"'{key}' has type {type(payload[key]).__name__}")
    if version is not None and isinstance(version, int) and version >= 2:
        for key in ("reason", "detail"):
            if key not in payload:
                problems.append(f"missing '{key}'")
    if problems:
        return problems
    if payload["schema"] != SCHEMA:
        problems.append(f"schema is {payload['schema']!r}, expected {SCHEMA!r}")
    if payload["schema_version"] > SCHEMA_VERSION:
        problems.append(f"schema_version {payload['schema_version']} is newer than {SCHEMA_VERSION}")
    kinds = JUDGED if payload["schema_version"] == 1 else KINDS
    if payload["verdict"] not in kinds:
        problems.append(f"verdict {payload['verdict']!r} is not {'/'.join(kinds)}")
    elif payload["verdict"] in JUDGED:
        if payload["verdict"] != decide(payload["score"], payload["threshold"]):
            problems.append("verdict disagrees with score and threshold")
        if payload["schema_version"] >= 2 and payload.get("reason") is not None:
            problems.append(f"an {payload['verdict']} verdict has no reason, got {payload['reason']!r}")
    elif not isinstance(payload.get("reason"), str) or not payload["reason"]:
        problems.append(f"a {payload['verdict']} record needs a reason code")
    return problems
