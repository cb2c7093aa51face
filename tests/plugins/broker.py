"""Fixtures for the broker area: a REAL MQTT broker on 127.0.0.1 and a paho subscriber.

`mqtt_broker` is parametrised by the brokers installed here: Debian mosquitto
(/usr/sbin/mosquitto) and the pure-Python amqtt (dev extra), so every test that uses it runs
against each. The object has host, port, uri, kind, stop(), kill(), start() (same port).
`mqtt_broker_factory(kind=..., persistence=..., password_file=..., tls=...)` builds more
specific ones (mosquitto-only features skip on amqtt). `Subscriber` collects messages.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.publish.broker import BrokerTLS, EmbeddedBroker, available_kinds

BROKER_KINDS = available_kinds()


def _kind_params() -> list[Any]:
    if BROKER_KINDS:
        return BROKER_KINDS
    return [pytest.param(None, marks=pytest.mark.skip(reason="no MQTT broker: install mosquitto or amqtt"))]


@pytest.fixture(params=_kind_params())
def mqtt_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(request.param, workdir=tmp_path / f"broker-{request.param}")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mqtt_broker_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedBroker]]:
    made: list[EmbeddedBroker] = []

    def make(
        kind: str = "auto",
        *,
        persistence: bool = False,
        password_file: Path | None = None,
        tls: BrokerTLS | None = None,
    ) -> EmbeddedBroker:
        if kind != "auto" and kind not in BROKER_KINDS:
            pytest.skip(f"{kind} broker is not installed")
        if kind == "auto" and not BROKER_KINDS:
            pytest.skip("no MQTT broker: install mosquitto or amqtt")
        broker = EmbeddedBroker(
            kind, workdir=tmp_path / f"broker{len(made)}", persistence=persistence, password_file=password_file, tls=tls
        )  # type: ignore[arg-type]
        made.append(broker)
        return broker.start()

    yield make
    for broker in made:
        broker.close()


class Subscriber:
    """A paho 2 subscriber that (re)subscribes on every connect and records every message."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        client_id: str = "",
        clean_session: bool = True,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Any] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.topic, self.qos = topic, qos
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self._subscribed.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=self.qos)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(message)

    def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        assert self._subscribed.wait(timeout_s), f"subscriber to {self.topic} did not get its SUBACK in {timeout_s} s"

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.messages)

    def payloads(self, suffix: str = "") -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.snapshot() if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.02)
        return predicate(self.snapshot())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., Subscriber]]:
    subs: list[Subscriber] = []

    def make(broker: EmbeddedBroker, topic: str, **kw: Any) -> Subscriber:
        sub = Subscriber(broker.host, broker.port, topic, **kw)
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()
