"""rollout.sh / station.sh health without stand-in commands: READY (systemd 'active' under a
new InvocationID) within --health-timeout, no automatic restart for --stable s, and the
retained MQTT status online on the new bundle. systemd itself is replaced by
tests/deploy/fake_systemctl.sh (no systemd as PID 1 here); the broker is real."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_runtime.status import status_payload
from tests.deploy.helpers import REPO, STATION_SH, local_rollout_cmd, make_bundle


@pytest.fixture
def systemd(tmp_path):
    state, bindir = tmp_path / "systemd", tmp_path / "bin"
    state.mkdir()
    bindir.mkdir()
    (bindir / "systemctl").symlink_to(Path(__file__).with_name("fake_systemctl.sh"))
    for key, value in {"ActiveState": "active", "InvocationID": "old", "NRestarts": "0"}.items():
        (state / key).write_text(value + "\n")
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "FAKE_SYSTEMD_DIR": str(state),
        "PYTHONPATH": str(REPO),
    }
    return state, env


def rollout(station: Path, bundle: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = local_rollout_cmd(station, bundle, "--health-timeout", "4", "--stable", "2", *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
def test_rollout_health_ready_stable_or_rolled_back(tmp_path, systemd):
    state, env = systemd
    station = tmp_path / "station"
    r1 = rollout(station, make_bundle(tmp_path / "b1", "v1"), env)
    assert r1.returncode == 0, r1.stderr
    v1 = os.readlink(station / "current")

    (state / "scenario").write_text("crash")  # READY, then a crash and an automatic restart
    r2 = rollout(station, make_bundle(tmp_path / "b2", "v2"), env)
    assert r2.returncode == 1 and "restarted or stopped within 2s (state active, restarts 0 -> 1)" in r2.stderr
    assert os.readlink(station / "current") == v1

    time.sleep(3.5)  # let the rollback's own restart (crash scenario) play out first
    (state / "scenario").write_text("never_ready")
    r3 = rollout(station, make_bundle(tmp_path / "b3", "v3"), env)
    assert r3.returncode == 1 and "not READY within 4s (state activating)" in r3.stderr
    assert os.readlink(station / "current") == v1 and "rolling back" in r3.stderr


def publish_status(broker, station: str, sha: str) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(
        f"clipinspect/{station}/status",
        status_payload("online", station, "running", {"bundle_sha256": sha}),
        qos=1,
        retain=True,
    ).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


@pytest.mark.slow
@pytest.mark.broker
def test_health_requires_the_new_bundle_in_the_retained_status(tmp_path, systemd, mqtt_broker_factory):
    _, env = systemd
    broker = mqtt_broker_factory("mosquitto")
    root = tmp_path / "station"
    bundle = make_bundle(root / "bundles" / "v1", "v1")
    sha = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    step = [
        str(STATION_SH),
        "--root",
        str(root),
        "--cli",
        str(Path(sys.executable).parent / "clipinspect"),
        "--health-timeout",
        "4",
        "--stable",
        "1",
        "--status-broker",
        f"mqtt://{broker.host}:{broker.port}/clipinspect",
        "--station",
        "st7",
    ]

    publish_status(broker, "st7", "0" * 64)  # still the old bundle
    subprocess.run([*step, "restart"], env=env, check=True)
    r = subprocess.run([*step, "health", "v1"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and f"expected online on {sha[:12]}" in r.stderr

    publish_status(broker, "st7", sha)
    subprocess.run([*step, "restart"], env=env, check=True)
    r = subprocess.run([*step, "health", "v1"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"status online with bundle {sha}" in r.stderr
