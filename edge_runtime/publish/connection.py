"""The MQTT connection: the broker address parsed from the URI, paho-mqtt 2's client set-up
(client id, last will, credentials, TLS, reconnect backoff), its callbacks, and a one-shot
CONNECT probe that `doctor` runs through the same set-up.

Threads and state of `MQTTConnection` (the publisher's Condition `cv` guards them; the
sender waits on the same Condition, so every change wakes it):
  C1  `connected`, `epoch`, `reconnects` and the `acks` inbox are written only by paho's
      network thread (on_connect, on_disconnect, on_publish), always under `cv`. The sender
      reads them under `cv` and empties `acks` with take_acks().
  C2  `epoch` goes up by one at each accepted CONNACK: the in-flight window (window.py W3)
      keeps anything newer back while a message handed over in an older epoch is unacked.
  C3  the callbacks never block and do no I/O under `cv` (publisher invariant P5); a refused
      CONNACK is logged once per distinct reason and paho retries with backoff
      (reconnect_min_s..reconnect_max_s). `_last_refusal` is touched by the network thread only.
  C4  `publish()` is called by the sender thread only, outside `cv` (paho takes its own locks).
  C5  the callbacks hold the connection, never the publisher, so a forgotten publisher can be
      garbage collected and its weakref.finalize release the client.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_runtime.errors import PublishError, first_line
from edge_runtime.publish.base import redact_uri
from edge_runtime.publish.options import PublishOptions

log = logging.getLogger(__name__)

__all__ = ["BrokerTarget", "MQTTConnection", "new_client", "configure_tls", "probe_broker"]


@dataclass(frozen=True)
class BrokerTarget:
    """Where to connect and as whom, parsed from `mqtt(s)://[user[:password]@]host[:port][/prefix]`.

    Attributes:
        uri: the URI as given (shown redacted).
        host, port: the broker (port 1883, or 8883 for mqtts).
        tls: True for mqtts://.
        username, password: from the URI, else from the publish options / environment.
        prefix: the topic prefix (URI path, else `publish.topic_prefix`).
    """

    uri: str
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = field(repr=False)
    prefix: str

    @property
    def shown(self) -> str:
        """The URI without its password."""
        return redact_uri(self.uri)

    @classmethod
    def from_uri(cls, uri: str, options: PublishOptions) -> BrokerTarget:
        """Parse and check an MQTT URI.

        Args:
            uri: `mqtt://...` or `mqtts://...`.
            options: credentials and TLS files not in the URI, and the default topic prefix.

        Returns:
            The target.

        Raises:
            PublishError: one line naming the problem (the password is never echoed).
        """
        shown = redact_uri(uri)
        scheme = uri.split("://", 1)[0].lower()
        if scheme not in ("mqtt", "mqtts"):
            raise PublishError(f"broker URI {shown} must look like mqtt://host[:port] or mqtts://host[:port]")
        if "#" in uri or "+" in uri.split("://", 1)[1].split("@")[-1]:
            raise PublishError(f"publisher URI {shown}: topic prefix must not hold wildcards (# or +)")
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as exc:
            raise PublishError(f"publisher URI {shown}: {exc}") from None
        if not parts.hostname:
            raise PublishError(f"publisher URI {shown}: no broker host")
        if parts.query or parts.fragment:
            raise PublishError(f"publisher URI {shown}: query strings are not supported; use the publish options")
        tls = scheme == "mqtts"
        if not tls and (options.tls.ca_file or options.tls.cert_file):
            raise PublishError(
                f"publisher URI {shown}: TLS files are set in publish.tls but the scheme is mqtt://; use mqtts://"
            )
        return cls(
            uri=uri,
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else options.username,
            password=options.resolve_password(unquote(parts.password) if parts.password else None),
            prefix=unquote(parts.path.strip("/")) or options.topic_prefix,
        )


def paho() -> Any:
    """The `paho.mqtt.client` module, or MissingDependency naming the extra to install."""
    from edge_runtime.deps import require

    return require("paho.mqtt.client", extra="edge", purpose="publishing verdicts over MQTT")


def configure_tls(client: Any, options: PublishOptions) -> None:
    """Set up TLS on a paho client from `publish.tls` (system CAs when no ca_file).

    Args:
        client: a paho `Client`.
        options: the publish options.

    Raises:
        PublishError: a TLS file is missing or cannot be loaded.
    """
    t = options.tls
    for name in ("ca_file", "cert_file", "key_file"):
        p: Path | None = getattr(t, name)
        if p is not None and not Path(p).is_file():
            raise PublishError(f"publish.tls.{name}: file not found: {p}")
    try:
        client.tls_set(
            ca_certs=str(t.ca_file) if t.ca_file else None,
            certfile=str(t.cert_file) if t.cert_file else None,
            keyfile=str(t.key_file) if t.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise PublishError(f"publish.tls: cannot load certificates: {exc}") from None
    if t.insecure:
        log.warning("MQTT TLS: host name check disabled (publish.tls.insecure)")
        client.tls_insecure_set(True)


def new_client(target: BrokerTarget, options: PublishOptions, client_id: str) -> Any:
    """A paho client (MQTT 3.1.1, clean session) with the target's credentials and TLS.

    Args:
        target: the broker and credentials.
        options: the publish options (TLS files).
        client_id: the MQTT client id.

    Returns:
        The unconnected paho `Client`.

    Raises:
        PublishError: TLS files missing or unloadable.
        MissingDependency: paho-mqtt is not installed.
    """
    mqtt = paho()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    if target.username is not None or target.password is not None:
        client.username_pw_set(target.username or "", target.password)
    if target.tls:
        configure_tls(client, options)
    return client


class MQTTConnection:
    """The publisher's link to the broker: one paho client, connected in the background and
    reconnected with backoff; see the module docstring for its invariants.

    Args:
        target: broker and credentials.
        options: publish options (keepalive, backoff, window size, TLS).
        client_id: the MQTT client id.
        cv: the publisher's Condition (guards the state below, wakes the sender).
        will: (topic, payload, retain) the broker publishes if the link dies.

    Raises:
        PublishError: TLS files missing or unloadable.
    """

    def __init__(
        self,
        target: BrokerTarget,
        options: PublishOptions,
        client_id: str,
        cv: threading.Condition,
        will: tuple[str, bytes, bool],
    ) -> None:
        self.target = target
        self.cv = cv
        self.connected = False
        self.epoch = 0
        self.reconnects = 0
        self.acks: list[int] = []
        self.stopping = False  # set by close: a disconnect is then expected, not warned about
        self._last_refusal = ""
        client = new_client(target, options, client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.reconnect_delay_set(options.reconnect_min_s, options.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(options.max_inflight + 4)  # + status messages
        client.max_queued_messages_set(0)  # the outbox bounds memory
        client.will_set(will[0], will[1], qos=1, retain=will[2])
        self.client = client
        self._keepalive = options.keepalive_s

    def start(self) -> None:
        """Start connecting in the background (paho's network thread).

        Raises:
            PublishError: paho refuses the address.
        """
        try:
            self.client.connect_async(self.target.host, self.target.port, keepalive=self._keepalive)
        except (OSError, ValueError) as exc:
            raise PublishError(f"{self.target.shown}: cannot start MQTT connection: {exc}") from None
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Any:
        """Hand one message to paho (sender thread, outside `cv`); returns paho's MQTTMessageInfo."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def take_acks(self) -> list[int]:
        """Under `cv`: the PUBACK message ids received since the last call."""
        acks, self.acks = self.acks, []
        return acks

    def stop(self) -> None:
        """Disconnect and stop paho's network thread (idempotent)."""
        self.stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) ----------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        host, port = self.target.host, self.target.port
        if reason_code.is_failure:
            text = f"MQTT broker {host}:{port} refused the connection: {reason_code}; retrying with backoff"
            if text != self._last_refusal:
                log.error(text)
                self._last_refusal = text
            return
        self._last_refusal = ""
        with self.cv:
            if self.epoch:
                self.reconnects += 1
            self.connected = True
            self.epoch += 1
            self.cv.notify_all()
        log.info("MQTT connected to %s:%d", host, port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self.cv:
            was = self.connected
            self.connected = False
            self.cv.notify_all()
        if was and not self.stopping:
            log.warning(
                "MQTT disconnected from %s:%d (%s); verdicts wait in the outbox until it is back",
                self.target.host,
                self.target.port,
                reason_code,
            )

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self.cv:
            self.acks.append(mid)
            self.cv.notify_all()


def probe_broker(uri: str, options: PublishOptions | None = None, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Connect once through paho with the configured TLS and credentials, wait for CONNACK.

    Args:
        uri: `mqtt(s)://[user[:password]@]host[:port]`.
        options: publish options (TLS files, username, password / password_env).
        timeout_s: the bound on the TCP connect and on the wait for CONNACK, each.

    Returns:
        (accepted, one line saying what happened, with the CONNACK reason code).

    Raises:
        PublishError: the URI or the TLS files are bad.
        MissingDependency: paho-mqtt is not installed.
    """
    options = options or PublishOptions()
    target = BrokerTarget.from_uri(uri, options)
    shown = f"{'mqtts' if target.tls else 'mqtt'}://{target.host}:{target.port}"
    client = new_client(target, options, f"clipinspect-doctor-{os.getpid()}")
    answer: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        answer.setdefault("connack", reason_code)
        done.set()

    def on_disconnect(_c: Any, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        answer.setdefault("lost", reason_code)
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    client.connect_timeout = timeout_s
    try:
        client.connect(target.host, target.port, keepalive=max(5, int(timeout_s) + 5))
    except ssl.SSLError as exc:
        return False, f"{shown}: TLS handshake failed ({first_line(exc)})"
    except OSError as exc:
        return False, f"{shown}: TCP connect failed ({exc.strerror or first_line(exc)})"
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return False, f"{shown}: TCP ok but no MQTT CONNACK within {timeout_s:g} s"
        code = answer.get("connack")
        if code is None:
            return False, f"{shown}: TCP ok but no MQTT CONNACK (connection closed: {answer.get('lost')})"
        if code.is_failure:
            return False, f"{shown}: MQTT CONNECT refused: {code} (reason code {code.value})"
        return True, f"{shown}: TCP + MQTT CONNECT accepted ({code}){' over TLS' if target.tls else ''}"
    finally:
        client.disconnect()
        client.loop_stop()
