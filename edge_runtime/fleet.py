"""A fleet view from the brokers' retained status topics: one line per station.

Every station publishes a retained `<prefix>/status` record (edge_runtime/status.py), so a
subscriber to `<fleet prefix>/+/status` receives the latest record of every station at once,
including `offline` left by the broker when a station died (its last will). `collect` gathers
them; `format_line` renders one; `wait_for_bundle` is the rollout's check that a station came
back online on the bundle it was given.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_runtime.errors import CheckFailed, ConfigError, PublishError

DEFAULT_PASSWORD_ENV = "CLIPINSPECT_FLEET_PASSWORD"


@dataclass(frozen=True)
class FleetBroker:
    """Where the fleet's status records are: broker address, TLS, credentials and the fleet topic prefix.

    Build it with `parse` from the `--broker` URI, so the password can stay out of argv.
    """

    host: str
    port: int
    tls: bool
    prefix: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None

    @classmethod
    def parse(cls, uri: str, *, ca_file: Path | None = None, password_env: str = DEFAULT_PASSWORD_ENV) -> FleetBroker:
        """mqtt[s]://[user[:pass]@]host[:port]/<fleet prefix>; the password may come from `password_env`.

        Args:
            uri: the broker URI; port defaults to 1883 (8883 for mqtts), prefix to "clipinspect".
            ca_file: CA bundle for mqtts (None: the system's).
            password_env: environment variable read when the URI carries no password.

        Raises:
            ConfigError: not mqtt/mqtts, no host, a bad port, or a prefix with MQTT wildcards.
        """
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"--broker {uri!r}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"--broker {uri!r} must look like mqtt[s]://host[:port]/prefix")
        prefix = unquote(parts.path.strip("/")) or "clipinspect"
        if "+" in prefix or "#" in prefix:
            raise ConfigError(f"--broker {uri!r}: the prefix must not hold wildcards")
        tls = parts.scheme == "mqtts"
        password = unquote(parts.password) if parts.password else os.environ.get(password_env) or None
        return cls(
            parts.hostname,
            port or (8883 if tls else 1883),
            tls,
            prefix,
            unquote(parts.username) if parts.username else None,
            password,
            ca_file,
        )


def _client(broker: FleetBroker, on_message: Callable[[str, bytes], None], subscribed: threading.Event) -> Any:
    from edge_runtime.deps import require

    mqtt = require("paho.mqtt.client", extra="edge", purpose="reading station status over MQTT")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    topic = f"{broker.prefix}/+/status"
    client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.on_message = lambda c, u, m: on_message(m.topic, m.payload)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=str(broker.ca_file) if broker.ca_file else None)
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        raise PublishError(f"cannot reach broker {broker.host}:{broker.port}: {exc}") from None
    return client


def collect(
    broker: FleetBroker, *, wait_s: float = 2.0, until: Callable[[dict[str, dict[str, Any]]], bool] | None = None
) -> dict[str, dict[str, Any]]:
    """Latest status per station (topic level under the prefix), gathered for up to `wait_s`
    after the subscription is acknowledged (retained records arrive right after), or until
    `until(statuses)` holds.

    Returns:
        {station: status record}; a payload that is not a JSON object becomes {"state": "unreadable"}.

    Raises:
        PublishError: the broker cannot be reached or does not acknowledge the subscription.
        MissingDependency: paho-mqtt is not installed.
    """
    statuses: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(topic: str, payload: bytes) -> None:
        station = topic[len(broker.prefix) + 1 : -len("/status")]
        try:
            record = json.loads(payload)
        except ValueError:
            record = {"state": "unreadable"}
        if not isinstance(record, dict):
            record = {"state": "unreadable"}
        with lock:
            statuses[station] = record

    client = _client(broker, on_message, subscribed)
    client.loop_start()
    try:
        if not subscribed.wait(max(wait_s, 5.0)):
            raise PublishError(
                f"broker {broker.host}:{broker.port} did not acknowledge the subscription (refused credentials or ACL?)"
            )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with lock:
                if until is not None and until(statuses):
                    break
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return dict(statuses)


def _age(record: dict[str, Any], now: datetime) -> str:
    try:
        t = datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return "never"
    return f"{max((now - t).total_seconds(), 0):.0f}s ago"


def format_line(station: str, record: dict[str, Any], now: datetime | None = None) -> str:
    """`station  state  bundle  fps  OK/NG/SKIPPED/ERROR  last seen`."""
    now = now or datetime.now(timezone.utc)
    counts = record.get("counts") or {}
    fps = record.get("fps")
    return "  ".join(
        [
            f"{station:<20}",
            f"{str(record.get('state', '?')):<8}",
            f"bundle {str(record.get('bundle_sha256') or '-')[:12]:<12}",
            f"fps {fps:6.1f}" if isinstance(fps, (int, float)) else "fps      -",
            " ".join(f"{k} {counts.get(k, 0)}" for k in ("OK", "NG", "SKIPPED", "ERROR")),
            f"last seen {_age(record, now)}",
        ]
    )


def wait_for_bundle(broker: FleetBroker, station: str, sha256: str, timeout_s: float) -> dict[str, Any]:
    """Wait until `station`'s retained status is online on bundle `sha256`; CheckFailed otherwise.

    Returns:
        The station's status record once it matches.

    Raises:
        CheckFailed: within `timeout_s` the station published no status, is not online, or
            runs another bundle (the message says which).
        PublishError: the broker cannot be reached.
    """

    def good(s: dict[str, dict[str, Any]]) -> bool:
        r = s.get(station, {})
        return r.get("state") == "online" and r.get("bundle_sha256") == sha256

    statuses = collect(broker, wait_s=timeout_s, until=good)
    if good(statuses):
        return statuses[station]
    r = statuses.get(station)
    if r is None:
        raise CheckFailed(f"station {station}: no status on {broker.prefix}/{station}/status within {timeout_s:g} s")
    raise CheckFailed(
        f"station {station}: status {r.get('state')} on bundle {str(r.get('bundle_sha256'))[:12]}, expected online on {sha256[:12]}"
    )
