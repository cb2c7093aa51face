"""`clipinspect fleet` against a real broker holding retained station statuses."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest

from edge_runtime.cli import main
from edge_runtime.status import status_payload

SHA_A, SHA_B = "a" * 64, "b" * 64


def publish_retained(broker, records: dict[str, bytes]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in records.items():
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def fleet_broker(mqtt_broker):
    fields = {"bundle_sha256": SHA_A, "fps": 29.5, "counts": {"OK": 120, "NG": 3, "SKIPPED": 1, "ERROR": 0}}
    publish_retained(
        mqtt_broker,
        {
            "plant/line1/st7/status": status_payload("online", "c7", "running", {"station": "st7", **fields}),
            "plant/line1/st8/status": status_payload("offline", "c8", "connection lost", {"station": "st8"}),
            "plant/line2/st1/status": status_payload("online", "c1", "running", {"station": "st1"}),  # other line
        },
    )
    return mqtt_broker


def test_one_line_per_station(fleet_broker, capsys):
    assert (
        main(["fleet", "--broker", f"mqtt://{fleet_broker.host}:{fleet_broker.port}/plant/line1", "--wait", "1"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    st7, st8 = lines
    assert st7.split()[:4] == ["st7", "online", "bundle", SHA_A[:12]]
    assert "fps   29.5" in st7 and "OK 120 NG 3 SKIPPED 1 ERROR 0" in st7 and "last seen" in st7
    assert st8.split()[:2] == ["st8", "offline"]


def test_expect_sha256_is_the_rollout_health_check(fleet_broker, capsys):
    uri = f"mqtt://{fleet_broker.host}:{fleet_broker.port}/plant/line1"
    assert main(["fleet", "--broker", uri, "--station", "st7", "--expect-sha256", SHA_A, "--timeout", "2"]) == 0
    assert main(["fleet", "--broker", uri, "--station", "st7", "--expect-sha256", SHA_B, "--timeout", "1"]) == 1
    assert main(["fleet", "--broker", uri, "--station", "st8", "--expect-sha256", SHA_A, "--timeout", "1"]) == 1
    assert main(["fleet", "--broker", uri, "--station", "st9", "--expect-sha256", SHA_A, "--timeout", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert (
        f"expected online on {SHA_B[:12]}" in err[0]
        and "status offline" in err[1]
        and "no status on plant/line1/st9/status" in err[2]
    )


def test_bad_broker_uri_is_one_line(capsys):
    assert main(["fleet", "--broker", "http://x/y"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
