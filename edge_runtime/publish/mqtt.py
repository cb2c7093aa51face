"""MQTT publisher (paho-mqtt 2, CallbackAPIVersion.VERSION2, MQTT 3.1.1).

Topics (prefix from the URI path or `topic_prefix`, default "clipinspect"):
  <prefix>/verdict                 one verdict JSON per frame, QoS 1, not retained
  <prefix>/<camera_serial>/verdict instead, when `per_camera_topic` is true
  <prefix>/status                  retained JSON {"state": "online"|"offline", ...}
                                   (edge_runtime/status.py); publish_status() adds the
                                   station's counters to the "online" record; the broker
                                   publishes the "offline" last will when the client
                                   vanishes; close() publishes "offline" itself.

Three parts, each with its invariants:
  durable queue  edge_runtime/publish/spool.py (the outbox: sqlite WAL, or memory without
                 spool_dir), invariants Q1-Q4
  in-flight      edge_runtime/publish/window.py, invariants W1-W4
  connection     this module: paho's client, its callbacks, and one sender thread

Invariants of the publisher (P):
  P1  durable before counted: publish()/publish_many() return only after the verdicts are
      committed to the outbox (with spool_dir: on disk, one transaction per call = group
      commit). The pipeline counts a verdict as published only after that return.
  P2  a verdict leaves the outbox only through remove_through(window.acked_through), i.e.
      after its PUBACK (QoS 0: after paho took it) or after paho refused it for good
      (counted as dropped).
  P3  the sender is the only thread that reads the outbox or touches the window's send
      side; it sends in seq order (W1, W3), so the broker sees the verdicts in order; after a
      crash the next process sends the outbox from its oldest message.
  P4  nothing is dropped silently: a verdict the outbox cannot take (spool full, disk
      error, or the memory bound without spool_dir) is counted in stats()["dropped"] and
      logged (1st, 2nd, 4th, 8th... time).
  P5  the lock `_cv` is never held during disk I/O or a paho call that can block, so paho's
      callbacks (acks, connects) are never stuck behind an fsync.

Delivery is therefore at-least-once and in order. A verdict may reach a subscriber twice (a
PUBACK lost with the connection, or a crash before the delete of acknowledged messages was
written); a repeat is byte-for-byte the same payload. De-duplicate on
(camera_serial, frame_id, capture_ts_ns): frame_id alone restarts at 0 with each process.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from edge_runtime.errors import PublishError
from edge_runtime.publish.options import PublishOptions
from edge_runtime.publish.spool import DurableQueue, MemoryQueue, Message
from edge_runtime.publish.window import InFlight, InFlightWindow
from edge_runtime.status import STATUS_SCHEMA, STATUS_SCHEMA_VERSION, status_payload  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

_instances = itertools.count(1)
_READ_AHEAD = 256  # messages read from the outbox per query
_DELETE_EVERY_S = 0.1  # acknowledged messages are deleted in groups, at most this often


def _encode(verdict: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(verdict, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PublishError(f"verdict cannot be encoded as JSON: {exc}") from None


def open_outbox(options: PublishOptions) -> DurableQueue | MemoryQueue:
    if options.spool_dir is None:
        return MemoryQueue(options.queue_max)
    return DurableQueue(options.spool_dir, max_bytes=options.spool_max_bytes, fsync=options.spool_fsync, sync_interval_s=options.spool_sync_interval_s)


class MQTTPublisher:
    def __init__(
        self,
        uri: str,
        *,
        host: str,
        port: int,
        tls: bool,
        username: str | None,
        password: str | None,
        topic_prefix: str,
        options: PublishOptions,
    ) -> None:
        mqtt = _paho()
        self.uri = uri
        self.options = options
        self.host, self.port = host, port
        self.prefix = topic_prefix
        # Unique per publisher: two publishers with one id would keep kicking each other off.
        self.client_id = options.client_id or f"clipinspect-{socket.gethostname()}-{os.getpid()}-{next(_instances)}"
        self.status_topic = f"{topic_prefix}/status"

        self._cv = threading.Condition()
        self._append_lock = threading.Lock()  # one appender at a time keeps seqs in call order
        self._acks: list[int] = []
        self._status_mids: set[int] = set()
        self._connected = False
        self._epoch = 0
        self._online_due = False
        self._status_fields: dict[str, Any] = {}
        self._offline_due = False
        self._offline_mid: int | None = None
        self._stopping = False
        self._closed = False
        self._ever_connected = False
        self._last_refusal = ""
        self._stats = dict.fromkeys(("published", "acked", "spooled", "replayed", "recovered", "dropped", "reconnects"), 0)

        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.reconnect_delay_set(options.reconnect_min_s, options.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(options.max_inflight + 4)  # + status messages
        client.max_queued_messages_set(0)  # the outbox bounds memory
        client.will_set(self.status_topic, status_payload("offline", self.client_id, "connection lost"), qos=1, retain=options.retain_status)
        if username is not None or password is not None:
            client.username_pw_set(username or "", password)
        if tls:
            _configure_tls(client, options)

        self._outbox = open_outbox(options)
        recovered = self._outbox.pending()
        if recovered:
            # A previous run left verdicts behind: they go out first, new ones queue behind.
            log.info("spool %s: %d verdict(s) from an earlier run will be sent first", options.spool_dir, recovered)
        self._stats["recovered"] = recovered
        self._recovered_through = self._outbox.last_seq
        self._last_seq = self._outbox.last_seq
        self._window = InFlightWindow(options.max_inflight, acked_through=self._outbox.first_seq - 1)
        self._ahead: collections.deque[Message] = collections.deque()  # read from the outbox, not yet sent
        self._deleted_through = self._window.acked_through
        self._last_delete = 0.0
        if not self._outbox.durable:
            log.warning(
                "MQTT publisher without publish.options.spool_dir: up to %d verdicts wait in memory only; a crash or power cut loses those not yet acknowledged",
                options.queue_max,
            )

        self._client = client
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-sender-{self.client_id}", daemon=True)
        try:
            client.connect_async(host, port, keepalive=options.keepalive_s)
        except (OSError, ValueError) as exc:
            self._outbox.close()
            raise PublishError(f"{_redact(uri)}: cannot start MQTT connection: {exc}") from None
        client.loop_start()
        self._sender.start()
        log.info(
            "MQTT publisher %s -> %s:%d prefix %r qos %d tls %s spool %s",
            self.client_id, host, port, topic_prefix, options.qos, tls,
            f"{options.spool_dir} (fsync {options.spool_fsync})" if options.spool_dir else "off",
        )

    # -- the pipeline side -----------------------------------------------------------------
    def publish(self, verdict: Mapping[str, Any]) -> None:
        self.publish_many([verdict])

    def publish_many(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        """Store the verdicts in the outbox in one transaction (P1), in order. A verdict that
        cannot be encoded raises PublishError after the ones before it are stored."""
        items: list[tuple[str, bytes]] = []
        error: PublishError | None = None
        for v in verdicts:
            try:
                items.append((self._topic(v), _encode(v)))
            except PublishError as exc:
                error = exc
                break
        with self._append_lock:
            if self._closed:
                raise PublishError(f"{_redact(self.uri)}: publish() after close()")
            stored = self._outbox.append(items) if items else []  # disk I/O outside _cv (P5)
            with self._cv:
                self._stats["published"] += len(items)
                if self._outbox.durable:
                    self._stats["spooled"] += len(stored)
                if stored:
                    self._last_seq = stored[-1].seq
                for _ in range(len(items) - len(stored)):
                    self._drop("spool full or unwritable" if self._outbox.durable else "memory queue full and no spool_dir")
                self._cv.notify_all()
        if error is not None:
            raise error

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Replace the station fields of the retained "online" status and send it when
        connected (latest wins: a status never queues behind verdicts or goes to the spool)."""
        with self._cv:
            if self._closed:
                return
            self._status_fields = dict(status)
            self._online_due = True
            self._cv.notify_all()

    def _drop(self, why: str) -> None:
        self._stats["dropped"] += 1
        n = self._stats["dropped"]
        if n & (n - 1) == 0:  # log 1st, 2nd, 4th, 8th... so a long outage does not flood the log
            log.warning("MQTT: verdict dropped (%s); %d dropped so far", why, n)

    def _topic(self, verdict: Mapping[str, Any]) -> str:
        if self.options.per_camera_topic:
            serial = str(verdict.get("camera_serial") or "unknown")
            serial = "".join("_" if c in "/+#" else c for c in serial)
            return f"{self.prefix}/{serial}/verdict"
        return f"{self.prefix}/verdict"

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every verdict stored so far is acknowledged (True) or timeout (False);
        either way the outbox is synced (spool_fsync batch)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._window.acked_through < self._last_seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(min(left, 0.1))
            done = self._window.acked_through >= self._last_seq
        self._outbox.sync()
        return done

    def close(self) -> None:
        with self._append_lock, self._cv:
            if self._closed:
                return
            self._closed = True
        delivered = self.flush(self.options.close_timeout_s)
        with self._cv:
            if self._connected:
                self._offline_due = True
                self._cv.notify_all()
        # The offline status is best effort: wait briefly for its PUBACK.
        deadline = time.monotonic() + min(2.0, self.options.close_timeout_s + 0.5)
        with self._cv:
            while self._connected and (self._offline_due or (self._offline_mid is not None and self._offline_mid in self._status_mids)):
                if time.monotonic() >= deadline:
                    break
                self._cv.wait(0.05)
            self._stopping = True
            self._cv.notify_all()
        self._sender.join(timeout=5.0)
        self._client.disconnect()
        self._client.loop_stop()
        with self._cv:
            self._process_acks()
            through = self._window.acked_through
            left = self._last_seq - through
            if not self._outbox.durable:
                self._stats["dropped"] += left  # memory only: gone with the process
        self._outbox.remove_through(through)
        self._outbox.close()
        if not delivered:
            where = f"kept in spool {self.options.spool_dir}" if self._outbox.durable else "LOST (no spool_dir)"
            log.warning("MQTT: closed with %d verdict(s) undelivered, %s", left, where)
        log.info("MQTT publisher closed: %s", self.stats())

    def stats(self) -> dict[str, int]:
        with self._cv:
            out = dict(self._stats)
            out["queued"] = self._last_seq - self._window.sent_seq
            out["inflight"] = self._window.unacked()
            out["spool_pending"] = self._last_seq - self._window.acked_through if self._outbox.durable else 0
            out["corrupt"] = self._outbox.corrupt
            out["connected"] = int(self._connected)
            return out

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            # Once per distinct refusal: paho keeps retrying with backoff (reconnect_min_s..max_s).
            text = f"MQTT broker {self.host}:{self.port} refused the connection: {reason_code}; retrying with backoff"
            if text != self._last_refusal:
                log.error(text)
                self._last_refusal = text
            return
        with self._cv:
            self._connected = True
            self._epoch += 1
            if self._ever_connected:
                self._stats["reconnects"] += 1
            self._ever_connected = True
            self._online_due = True
            self._last_refusal = ""
            self._cv.notify_all()
        log.info("MQTT connected to %s:%d", self.host, self.port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cv:
            was = self._connected
            self._connected = False
            self._cv.notify_all()
        if was and not self._stopping:
            log.warning("MQTT disconnected from %s:%d (%s); verdicts wait in the outbox until it is back", self.host, self.port, reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cv:
            self._acks.append(mid)
            self._cv.notify_all()

    # -- the sender thread -----------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            with self._cv:
                job = self._next_job()
                while job is None and not self._stopping and not self._housekeeping_due():
                    self._cv.wait(0.1)
                    job = self._next_job()
                if job is None and self._stopping:
                    return
                delete_through = self._window.acked_through
            if job is None:
                self._housekeeping(delete_through)
                continue
            kind, msg, entry = job
            try:
                if kind == "verdict":
                    self._send_verdict(msg, entry)
                else:
                    self._send_status(kind)
            except (ValueError, TypeError) as exc:
                # paho refuses this message for good (e.g. too large): count it, do not stall.
                log.error("MQTT: cannot publish %s: %s", f"verdict seq {msg.seq}" if msg else kind, exc)
                if entry is not None:
                    with self._cv:
                        self._window.fail(entry)
                        self._advance()
            except Exception as exc:  # noqa: BLE001 - anything else: keep the sender alive, retry
                log.error("MQTT: publishing %s failed: %s; retrying", f"verdict seq {msg.seq}" if msg else kind, exc)
                with self._cv:
                    if entry is not None:
                        self._window.take_back(entry)
                        self._ahead.clear()
                    elif kind == "online":
                        self._online_due = True
                    self._cv.wait(0.5)

    def _housekeeping_due(self) -> bool:
        """Under the lock: True when the sender has disk work (read ahead, delete acked)."""
        if not self._ahead and self._window.sent_seq < self._last_seq and self._connected:
            return True
        acked = self._window.acked_through
        if acked > self._deleted_through and (acked >= self._last_seq or time.monotonic() - self._last_delete >= _DELETE_EVERY_S):
            return True
        return self._outbox.sync_due()

    def _housekeeping(self, delete_through: int) -> None:
        """Outside the lock (P5): sync a due `batch` spool, delete what is acknowledged, read
        ahead what is to send."""
        if self._outbox.sync_due():
            self._outbox.sync()
        if delete_through > self._deleted_through:
            self._outbox.remove_through(delete_through)
            self._deleted_through = delete_through
            self._last_delete = time.monotonic()
        if not self._ahead:
            after = self._window.sent_seq
            try:
                batch = self._outbox.read_after(after, _READ_AHEAD)
            except Exception as exc:  # noqa: BLE001 - the disk failed under us: keep the thread alive
                log.error("MQTT sender: cannot read the spool: %s", exc)
                time.sleep(0.5)
                return
            if not batch:  # cannot happen while Q1-Q3 hold; never spin if it does
                time.sleep(0.05)
            with self._cv:
                if self._window.sent_seq == after:  # only this thread moves it; belt and braces
                    self._ahead.extend(batch)

    def _next_job(self) -> tuple[str, Message | None, InFlight | None] | None:
        """Under the lock: process acks, then pick what to send next, if anything."""
        self._process_acks()
        if not self._connected:
            return None
        if self._online_due:
            self._online_due = False
            return ("online", None, None)
        if self._offline_due:
            self._offline_due = False
            return ("offline", None, None)
        if self._stopping or not self._ahead or not self._window.can_send(self._epoch):
            return None
        msg = self._ahead.popleft()
        return ("verdict", msg, self._window.add(msg, self._epoch))

    def _send_verdict(self, msg: Message, entry: InFlight) -> None:
        info = self._client.publish(msg.topic, msg.payload, qos=self.options.qos, retain=False)
        with self._cv:
            if info.rc not in (0, 4):  # 4 = MQTT_ERR_NO_CONN: paho keeps it and sends it later
                log.warning("MQTT publish of seq %d returned rc %s; retrying", msg.seq, info.rc)
                self._window.take_back(entry)
                self._ahead.clear()  # read again from the outbox, starting with this one
                self._cv.wait(0.05)  # do not spin on a persistent error
                return
            if self.options.qos == 0:
                entry.acked = True
                self._advance()
            else:
                self._window.register(entry, info.mid)
                self._advance()
            self._cv.notify_all()

    def _send_status(self, kind: str) -> None:
        state = "online" if kind == "online" else "offline"
        reason = "connected" if kind == "online" else "shutdown"
        with self._cv:
            fields = dict(self._status_fields)
        if kind == "online" and fields:
            reason = "running"
        payload = status_payload(state, self.client_id, reason, fields)
        info = self._client.publish(self.status_topic, payload, qos=1, retain=self.options.retain_status)
        with self._cv:
            if not self._window.claim_early(info.mid):
                self._status_mids.add(info.mid)
            if kind == "offline":
                self._offline_mid = info.mid
            self._cv.notify_all()

    def _process_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        for mid in acks:
            if mid in self._status_mids:
                self._status_mids.discard(mid)
            else:
                self._window.ack(mid)
        self._advance()

    def _advance(self) -> None:
        """Retire the acknowledged prefix of the window and count it."""
        for f in self._window.retire():
            if f.failed:
                self._stats["dropped"] += 1
                continue
            self._stats["acked"] += 1
            if f.msg.seq <= self._recovered_through:
                self._stats["replayed"] += 1
        self._cv.notify_all()


def _configure_tls(client: Any, options: PublishOptions) -> None:
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


def _redact(uri: str) -> str:
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    creds, host = rest.split("@", 1) if "@" in rest.split("/", 1)[0] else ("", rest)
    if not creds:
        return uri
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _paho() -> Any:
    from edge_runtime.deps import require

    return require("paho.mqtt.client", extra="edge", purpose="publishing verdicts over MQTT")
