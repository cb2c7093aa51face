"""ERROR records and the station status over a real broker: `clipinspect run` publishes a retained "online"
status carrying the bundle's sha256 (what the rollout health check and `clipinspect fleet`
read), then the record counts, camera counters and process figures at every stats interval."""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main

pytestmark = pytest.mark.broker


def _statuses(sub) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/status")]


def test_run_publishes_station_status_with_bundle_and_counts(mqtt_broker, mqtt_subscriber, toy_bundle, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (64, 96, 3), np.uint8))
    (folder / "010b.png").write_bytes(b"not a png")
    (folder / "020b.jpg").write_bytes(b"")
    sub = mqtt_subscriber(mqtt_broker, "line1/#")
    rc = main(
        [
            "run",
            "--bundle",
            str(toy_bundle.root),
            "--source",
            f"folder://{folder}?fps=100",
            "--publish",
            f"{mqtt_broker.uri}/line1",
            "--set",
            "pipeline.stats_interval_s=0.1",
            "--set",
            "pipeline.drop_policy=block",
            "--set",
            "station=line1-cam7",
            "--summary-json",
            str(tmp_path / "s.json"),
        ]
    )
    assert rc == 0
    assert sub.wait_for(lambda msgs: sum(m.topic.endswith("/verdict") for m in msgs) == 42, 15)
    records = [json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/verdict")]
    assert [r["frame_id"] for r in records] == list(range(42))
    assert [(r["frame_id"], r["verdict"], r["reason"], r["score"]) for r in records if r["reason"]] == [
        (11, "ERROR", "undecodable", None),
        (22, "ERROR", "empty_file", None),
    ]
    # The closing status is published after the last verdict, so it may still be on its way.
    sub.wait_for(lambda msgs: any(sum(s.get("counts", {}).values()) == 42 for s in _statuses(sub)), 15)
    statuses = _statuses(sub)
    online = [s for s in statuses if s["state"] == "online" and "bundle_sha256" in s]
    assert online, statuses
    first, last = online[0], online[-1]
    assert first["station"] == "line1-cam7" and first["bundle_sha256"] == toy_bundle.manifest_sha256
    assert first["model_id"] == toy_bundle.manifest.model_id and first["backend"] and first["precision"] == "fp32"
    assert sum(last["counts"].values()) == 42 and last["counts"]["ERROR"] == 2 and last["counts"]["SKIPPED"] == 0
    assert last["reasons"] == {"undecodable": 1, "empty_file": 1}
    assert last["camera"]["delivered"] == 40 and last["camera"]["corrupt"] == 1 and last["camera"]["empty"] == 1
    assert last["process"]["rss_mb"] > 0 and last["process"]["fds"] > 0
