"""`doctor --broker` connects through paho-mqtt 2 as the publisher does (same URI parsing,
TLS and credentials) and reports the CONNACK reason code in one line; its publisher rows
come from the PUBLISHERS table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main
from edge_runtime.doctor import check_broker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


def test_tls_and_credentials_accepted(secure_broker: Any) -> None:
    options = {"tls": {"ca_file": str(secure_broker.test_tls.ca_file)}}
    check = check_broker(f"mqtts://device:dev-secret@127.0.0.1:{secure_broker.port}", 3, options)
    assert check.status == "ok" and "CONNECT accepted (Success) over TLS" in check.detail, check.detail


def test_wrong_password_reports_the_reason_code(secure_broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPINSPECT_MQTT_PASSWORD", "wrong")
    options = {"tls": {"ca_file": str(secure_broker.test_tls.ca_file)}, "username": "device"}
    check = check_broker(f"mqtts://127.0.0.1:{secure_broker.port}", 3, options)
    assert check.status == "fail" and check.required
    assert "MQTT CONNECT refused: Not authorized (reason code 135)" in check.detail and "\n" not in check.detail


def test_unknown_ca_is_a_tls_failure(secure_broker: Any) -> None:
    check = check_broker(f"mqtts://device:dev-secret@127.0.0.1:{secure_broker.port}", 3, None)
    assert check.status == "fail" and "TLS handshake failed" in check.detail and "dev-secret" not in check.detail


def test_doctor_reads_broker_tls_and_credentials_from_the_config(
    secure_broker: Any, tmp_path: Path, capsys: Any
) -> None:
    cfg = tmp_path / "station.yaml"
    cfg.write_text(
        "publish:\n"
        f"  uri: mqtts://127.0.0.1:{secure_broker.port}/sec\n"
        "  options:\n"
        "    username: device\n"
        "    password: dev-secret\n"
        f"    tls: {{ca_file: {secure_broker.test_tls.ca_file}}}\n"
    )
    rc = main(["doctor", "--json", "--config", str(cfg), "--timeout", "3"])
    doc = json.loads(capsys.readouterr().out)
    rows = {c["name"]: c for c in doc["checks"]}
    assert rc == 0 and rows["broker"]["status"] == "ok", rows["broker"]
    assert rows["publisher mqtt"]["status"] == "ok" and rows["publisher null"]["detail"].startswith("null://")


def test_bad_uri_is_one_failed_line() -> None:
    check = check_broker("mqtt://bob:pw@host:notaport", 1)
    assert check.status == "fail" and "Port could not be cast" in check.detail and "pw@" not in check.detail
    assert check_broker("http://host", 1).detail.startswith("broker URI http://host must look like mqtt://")
