"""Verdicts for publisher tests (real payloads from edge_runtime.verdict)."""

from __future__ import annotations

from typing import Any

from edge_runtime.verdict import make_verdict


def verdict(frame_id: int, camera_serial: str = "CAM1", score: float | None = None) -> dict[str, Any]:
    s = (frame_id % 10) / 10 if score is None else score
    return make_verdict(
        frame_id=frame_id,
        camera_serial=camera_serial,
        capture_ts_ns=1_000_000 * frame_id,
        score=s,
        threshold=0.55,
        bundle_sha256="0" * 64,
        model_id="test-model",
        backend="ort-cpu",
        precision="fp32",
        latency_ms={"preprocess": 1.0, "inference": 2.0},
    )


def first_occurrences(frame_ids: list[int]) -> list[int]:
    """The order in which frame ids were first seen (at-least-once allows repeats)."""
    seen: set[int] = set()
    out = []
    for f in frame_ids:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out
