"""deploy/mosquitto/bridge.conf.example with a real mosquitto on each side: the station's
topics reach the central broker, and what is published while the central broker is down is
queued on the station and delivered after it returns."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_runtime.publish.broker import available_kinds, mosquitto_path
from edge_runtime.status import status_payload

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "bridge.conf.example"

pytestmark = pytest.mark.skipif("mosquitto" not in available_kinds(), reason="mosquitto not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def station_conf(tmp_path: Path, central_port: int, local_port: int) -> Path:
    """The example as shipped, with only what differs on this machine replaced: ports, the
    central address, the persistence folder; TLS and the password are dropped (plain test broker)."""
    text = EXAMPLE.read_text()
    text = text.replace("listener 1883 127.0.0.1", f"listener {local_port} 127.0.0.1")
    text = re.sub(r"^address .*$", f"address 127.0.0.1:{central_port}", text, flags=re.M)
    text = text.replace("/var/lib/mosquitto/", f"{tmp_path}/station-data/")
    text = re.sub(r"^(remote_username|remote_password|bridge_cafile|bridge_insecure) .*$", "", text, flags=re.M)
    text = text.replace("restart_timeout 2 60", "restart_timeout 1 1")
    (tmp_path / "station-data").mkdir()
    conf = tmp_path / "station.conf"
    conf.write_text(text)
    return conf


def publish(port: int, messages: list[tuple[str, bytes, bool]]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload, retain in messages:
            c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_bridge_forwards_and_queues_while_central_is_down(tmp_path, mqtt_broker_factory, mqtt_subscriber):
    central = mqtt_broker_factory("mosquitto", persistence=True)
    local_port = free_port()
    station = subprocess.Popen(
        [str(mosquitto_path()), "-c", str(station_conf(tmp_path, central.port, local_port))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and station.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", local_port)) == 0:
                    break
            time.sleep(0.05)
        assert station.poll() is None, station.stdout.read().decode()
        sub = mqtt_subscriber(central, "clipinspect/#", client_id="fleet-view", clean_session=False)
        sub.wait_subscribed()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not sub.payloads("bridge/state"):
            time.sleep(0.05)  # the bridge announces itself once connected
        prefix = "clipinspect/line1-st7"
        publish(
            local_port,
            [
                (f"{prefix}/status", status_payload("online", "st7", "running", {"station": "line1-st7"}), True),
                (f"{prefix}/verdict", b'{"frame_id": 0}', False),
            ],
        )
        assert sub.wait_for(lambda ms: any(m.topic == f"{prefix}/verdict" for m in ms), 10)

        central.stop()
        publish(local_port, [(f"{prefix}/verdict", json.dumps({"frame_id": i}).encode(), False) for i in range(1, 21)])
        central.start()
        ok = sub.wait_for(lambda ms: len([m for m in ms if m.topic == f"{prefix}/verdict"]) >= 21, 30)
        ids = [json.loads(m.payload)["frame_id"] for m in sub.snapshot() if m.topic == f"{prefix}/verdict"]
        assert ok, f"central broker got frame ids {ids}"
        assert sorted(set(ids)) == list(range(21))  # none lost; QoS 1 may repeat one
        assert sub.payloads("/status")[0]["state"] == "online"
    finally:
        station.terminate()
        station.wait(10)
