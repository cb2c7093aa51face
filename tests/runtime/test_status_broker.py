"""The station status over a real broker: `clipinspect run` publishes a retained "online"
status carrying the bundle's sha256 (what the rollout health check and `clipinspect fleet`
read), then the record counts, camera counters and process figures at every stats interval."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_runtime.cli import main

pytestmark = pytest.mark.broker


def _statuses(sub) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/status")]


def test_run_publishes_station_status_with_bundle_and_counts(mqtt_broker, mqtt_subscriber, toy_bundle, tmp_path):
    sub = mqtt_subscriber(mqtt_broker, "line1/#")
    rc = main(
        [
            "run", "--bundle", str(toy_bundle.root), "--source", "synthetic://?width=96&height=64&count=40&fps=100",
            "--publish", f"{mqtt_broker.uri}/line1", "--set", "pipeline.stats_interval_s=0.1", "--set", "pipeline.drop_policy=block",
            "--set", "station=line1-cam7", "--summary-json", str(tmp_path / "s.json"),
        ]
    )
    assert rc == 0
    assert sub.wait_for(lambda msgs: sum(m.topic.endswith("/verdict") for m in msgs) == 40, 15)
    statuses = _statuses(sub)
    online = [s for s in statuses if s["state"] == "online" and "bundle_sha256" in s]
    assert online, statuses
    first, last = online[0], online[-1]
    assert first["station"] == "line1-cam7" and first["bundle_sha256"] == toy_bundle.manifest_sha256
    assert first["model_id"] == toy_bundle.manifest.model_id and first["backend"] and first["precision"] == "fp32"
    assert sum(last["counts"].values()) == 40 and last["counts"]["SKIPPED"] == last["counts"]["ERROR"] == 0
    assert last["camera"]["delivered"] == 40 and last["process"]["rss_mb"] > 0 and last["process"]["fds"] > 0
