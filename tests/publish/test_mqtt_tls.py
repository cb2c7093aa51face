"""mqtts:// for real: a CA and a server certificate made here, mosquitto with a TLS listener
and a password file, credentials from the URI or the environment."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.publish import open_publisher
from tests.publish.conftest import make_pki
from tests.publish.helpers import verdict

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "close_timeout_s": 0.5}


def _subscriber(mqtt_subscriber: Any, broker: Any) -> Any:
    sub = mqtt_subscriber(
        broker, "sec/verdict", username="plant", password="sub-secret", ca_file=broker.test_tls.ca_file
    )
    sub.wait_subscribed()
    return sub


def test_tls_and_credentials_from_uri(secure_broker: Any, mqtt_subscriber: Any) -> None:
    sub = _subscriber(mqtt_subscriber, secure_broker)
    uri = f"mqtts://device:dev-secret@127.0.0.1:{secure_broker.port}/sec"
    pub = open_publisher(uri, {**FAST, "tls": {"ca_file": str(secure_broker.test_tls.ca_file)}})
    for i in range(5):
        pub.publish(verdict(i))
    assert pub.flush(10) is True
    assert sub.wait_for(lambda m: len(m) >= 5)
    pub.close()
    assert [p["frame_id"] for p in sub.payloads()] == list(range(5))


def test_password_from_environment(secure_broker: Any, mqtt_subscriber: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = _subscriber(mqtt_subscriber, secure_broker)
    monkeypatch.setenv("CLIPINSPECT_MQTT_PASSWORD", "dev-secret")
    pub = open_publisher(
        f"mqtts://device@127.0.0.1:{secure_broker.port}/sec",
        {**FAST, "tls": {"ca_file": str(secure_broker.test_tls.ca_file)}},
    )
    pub.publish(verdict(1))
    assert pub.flush(10) is True
    assert sub.wait_for(lambda m: len(m) >= 1)
    pub.close()


def test_wrong_password_is_refused_and_logged(
    secure_broker: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.ERROR, logger="edge_runtime.publish.connection")
    opts = {**FAST, "tls": {"ca_file": str(secure_broker.test_tls.ca_file)}, "spool_dir": str(tmp_path / "spool")}
    pub = open_publisher(f"mqtts://device:wrong@127.0.0.1:{secure_broker.port}/sec", opts)
    pub.publish(verdict(1))
    assert pub.flush(1.0) is False
    pub.close()
    assert pub.stats()["acked"] == 0 and pub.stats()["spooled"] == 1  # kept, not lost
    assert any("refused the connection" in r.getMessage() for r in caplog.records)
    assert not any("wrong" in r.getMessage() for r in caplog.records)  # no secret in logs


def test_untrusted_server_certificate_never_connects(secure_broker: Any, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other-pki", name="other")
    pub = open_publisher(
        f"mqtts://device:dev-secret@127.0.0.1:{secure_broker.port}/sec",
        {**FAST, "tls": {"ca_file": str(other.ca_file)}},
    )
    pub.publish(verdict(1))
    assert pub.flush(1.0) is False
    assert pub.stats()["connected"] == 0
    pub.close()
