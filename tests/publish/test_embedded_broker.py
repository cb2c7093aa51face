"""The embedded broker helper the demo uses (`python -m edge_runtime.publish.broker`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.errors import MissingDependency, PublishError
from edge_runtime.publish import open_publisher
from edge_runtime.publish.broker import EmbeddedBroker, available_kinds, free_port
from tests.publish.helpers import verdict

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


def test_module_runs_a_broker_until_interrupted() -> None:
    if not available_kinds():
        pytest.skip("no MQTT broker installed")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.publish.broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"mqtt://127.0.0.1:{port}" in line, line
        pub = open_publisher(f"mqtt://127.0.0.1:{port}/demo", {"close_timeout_s": 5})
        pub.publish(verdict(1))
        assert pub.flush(10) is True
        pub.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unknown_or_missing_kind_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_runtime.publish.broker as b

    monkeypatch.setattr(b, "mosquitto_path", lambda: None)
    monkeypatch.setattr(b, "amqtt_available", lambda: False)
    with pytest.raises(MissingDependency, match="no MQTT broker: install mosquitto"):
        EmbeddedBroker("auto")
    with pytest.raises(MissingDependency, match="mosquitto is not installed"):
        EmbeddedBroker("mosquitto")


def test_amqtt_refuses_what_it_cannot_do() -> None:
    if "amqtt" not in available_kinds():
        pytest.skip("amqtt is not installed")
    with pytest.raises(PublishError, match="plain anonymous listeners only"):
        EmbeddedBroker("amqtt", persistence=True)


def test_port_in_use_is_reported(mqtt_broker: EmbeddedBroker, tmp_path: Path) -> None:
    clash = EmbeddedBroker(mqtt_broker.kind, port=mqtt_broker.port, workdir=tmp_path / "clash")  # type: ignore[arg-type]
    with pytest.raises(PublishError, match=f"{mqtt_broker.kind} broker"):
        clash.start(timeout_s=5)
    clash.close()
