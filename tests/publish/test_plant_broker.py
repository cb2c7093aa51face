"""deploy/mosquitto/ for real: mosquitto started from the example config (paths and ports
adapted to a temp dir), accounts made with add_station.sh, the example ACL. A wrong password
is refused with one log line, retried with backoff, and loses nothing; a station cannot
publish outside its own prefix."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.publish import open_publisher
from edge_runtime.publish.broker import free_port, mosquitto_path
from tests.plugins.broker import Subscriber
from tests.publish.conftest import make_pki
from tests.publish.helpers import first_occurrences, verdict

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "mosquitto"
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.4, "close_timeout_s": 1.0}
PASSWORDS = {"st1": "st1-secret", "st2": "st2-secret", "plant": "plant-secret"}


@dataclass
class PlantBroker:
    proc: subprocess.Popen[bytes]
    tls_port: int
    plain_port: int
    ca_file: Path
    passwd: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def add_account(passwd: Path, name: str, password: str) -> None:
    subprocess.run(
        [str(EXAMPLE / "add_station.sh"), "--file", str(passwd), "--no-reload", name],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


def adapt(conf: str, replace: dict[str, str]) -> str:
    """The example config with the lines that start with a key of `replace` swapped; every
    key must be found, so a changed example fails here instead of testing something else."""
    out, used = [], set()
    for line in conf.splitlines():
        key = next((k for k in replace if line == k or line.startswith(k + " ")), None)
        if key is not None:
            used.add(key)
            line = replace[key]
        out.append(line)
    assert used == set(replace), f"example config lacks {set(replace) - used}"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        out.append("user root")  # as root mosquitto would drop to 'mosquitto', who cannot read tmp dirs
    return "\n".join(out) + "\n"


@pytest.fixture
def plant_broker(tmp_path: Path) -> Iterator[PlantBroker]:
    if not mosquitto_path():
        pytest.skip("mosquitto is not installed")
    pki = make_pki(tmp_path / "pki")
    passwd, acl = tmp_path / "clipinspect.passwd", tmp_path / "clipinspect.acl"
    for name, pw in PASSWORDS.items():
        add_account(passwd, name, pw)
    acl.write_text((EXAMPLE / "clipinspect.acl").read_text())
    tls_port, plain_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        adapt(
            (EXAMPLE / "mosquitto.conf").read_text(),
            {
                "password_file": f"password_file {passwd}",
                "acl_file": f"acl_file {acl}",
                "listener 8883": f"listener {tls_port} 127.0.0.1",
                "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
                "cafile": f"cafile {pki.ca_file}",
                "certfile": f"certfile {pki.cert_file}",
                "keyfile": f"keyfile {pki.key_file}",
                "persistence_location": f"persistence_location {tmp_path}/",
                "log_dest": "log_dest stderr",
            },
        )
    )
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(mosquitto_path()), "-c", str(conf)], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    broker = PlantBroker(proc, tls_port, plain_port, pki.ca_file, passwd, log)
    try:
        for port in (tls_port, plain_port):
            deadline = time.monotonic() + 10
            while True:
                assert proc.poll() is None, broker.log_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, broker.log_text()
                    time.sleep(0.05)
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _plant(broker: PlantBroker) -> Subscriber:
    """The plant reader on the loopback listener (same accounts and ACL)."""
    sub = Subscriber(
        "127.0.0.1",
        broker.plain_port,
        "clipinspect/#",
        client_id="plant-reader",
        username="plant",
        password=PASSWORDS["plant"],
    )
    sub.wait_subscribed()
    return sub


def _station(broker: PlantBroker, user: str, password: str, prefix: str, **options: Any):
    return open_publisher(
        f"mqtts://{user}@127.0.0.1:{broker.tls_port}/{prefix}",
        {**FAST, "password": password, "tls": {"ca_file": str(broker.ca_file)}, **options},
    )


def _ids(sub: Subscriber, topic: str) -> list[int]:
    return [p["frame_id"] for p in (json.loads(m.payload) for m in sub.snapshot() if m.topic == topic)]


def _deliver(pub: Any, frame_ids: range | list[int]) -> None:
    """Publish one verdict per frame id; the broker must acknowledge them all within 10 s."""
    for i in frame_ids:
        pub.publish(verdict(i))
    assert pub.flush(10) is True, pub.stats()


def test_station_publishes_over_tls_under_its_prefix(plant_broker: PlantBroker) -> None:
    sub = _plant(plant_broker)
    try:
        pub = _station(plant_broker, "st1", PASSWORDS["st1"], "clipinspect/st1")
        _deliver(pub, range(10))
        assert sub.wait_for(lambda m: len(_ids(sub, "clipinspect/st1/verdict")) >= 10)
        pub.close()
        assert _ids(sub, "clipinspect/st1/verdict") == list(range(10))
        assert sub.wait_for(lambda m: any(x.topic == "clipinspect/st1/status" for x in m))
    finally:
        sub.close()


def test_wrong_password_is_refused_once_retried_and_nothing_is_lost(
    plant_broker: PlantBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sub = _plant(plant_broker)
    pub = None
    try:
        with caplog.at_level(logging.INFO, logger="edge_runtime.publish"):
            pub = _station(plant_broker, "st1", "a-new-password", "clipinspect/st1", spool_dir=str(tmp_path / "spool"))
            for i in range(20):
                pub.publish(verdict(i))
            deadline = time.monotonic() + 10
            while plant_broker.log_text().count("not authorised") < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            refusals = plant_broker.log_text().count("not authorised")
            assert refusals >= 3  # paho keeps retrying (backoff reconnect_min_s..reconnect_max_s)
            st = pub.stats()
            assert (st["spool_pending"], st["acked"], st["dropped"], st["connected"]) == (20, 0, 0, 0)
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and "refused the connection" in errors[0] and "\n" not in errors[0], errors
            assert "a-new-password" not in caplog.text
            # The admin sets the password the station was given, and reloads the broker.
            add_account(plant_broker.passwd, "st1", "a-new-password")
            plant_broker.proc.send_signal(signal.SIGHUP)
            assert pub.flush(15) is True, pub.stats()
        assert sub.wait_for(lambda m: len(_ids(sub, "clipinspect/st1/verdict")) >= 20)
        assert first_occurrences(_ids(sub, "clipinspect/st1/verdict")) == list(range(20))
        assert pub.stats()["dropped"] == 0
    finally:
        if pub is not None:
            pub.close()
        sub.close()


def test_publishing_outside_the_station_prefix_is_denied(plant_broker: PlantBroker) -> None:
    import paho.mqtt.client as mqtt

    sub = _plant(plant_broker)
    try:
        # st1 configured with st2's prefix: MQTT 3.1.1 has no negative PUBACK, so mosquitto
        # acknowledges and drops; the publisher counts them acknowledged, the plant sees nothing.
        wrong = _station(plant_broker, "st1", PASSWORDS["st1"], "clipinspect/st2")
        _deliver(wrong, range(5))
        wrong.close()
        # A later legitimate message arrives, so the denied ones would have arrived before it.
        right = _station(plant_broker, "st2", PASSWORDS["st2"], "clipinspect/st2")
        _deliver(right, [100])
        assert sub.wait_for(lambda m: 100 in _ids(sub, "clipinspect/st2/verdict"))
        right.close()
        assert _ids(sub, "clipinspect/st2/verdict") == [100]

        # MQTT 5 says so: PUBACK reason code 0x87 Not authorized.
        codes: list[Any] = []
        v5 = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="st1-v5", protocol=mqtt.MQTTv5)
        v5.username_pw_set("st1", PASSWORDS["st1"])
        v5.on_publish = lambda c, u, mid, rc, props: codes.append(rc)
        v5.connect("127.0.0.1", plant_broker.plain_port)
        v5.loop_start()
        try:
            v5.publish("clipinspect/st2/verdict", b"{}", qos=1).wait_for_publish(5)
            v5.publish("clipinspect/st1/verdict", b"{}", qos=1).wait_for_publish(5)
        finally:
            v5.disconnect()
            v5.loop_stop()
        assert [(c.value, c.is_failure) for c in codes] == [(0x87, True), (0, False)]
    finally:
        sub.close()
