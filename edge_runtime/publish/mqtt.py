"""MQTT publisher (paho-mqtt 2, CallbackAPIVersion.VERSION2).

Topics (prefix from the URI path or `topic_prefix`, default "clipinspect"):
  <prefix>/verdict                 one verdict JSON per frame, QoS 1, not retained
  <prefix>/<camera_serial>/verdict instead, when `per_camera_topic` is true
  <prefix>/status                  retained JSON {"state": "online"|"offline", ...}
                                   (edge_runtime/status.py); publish_status() adds the
                                   station's counters to the "online" record; the broker
                                   publishes the "offline" last will when the client
                                   vanishes; close() publishes "offline" itself.

Delivery: at-least-once, in order. One sender thread takes messages in sequence (in-memory
queue first, then the disk spool, which holds everything newer once it is in use) and keeps
at most `max_inflight` unacknowledged. A message counts as delivered on its PUBACK. After a
reconnect paho resends the unacknowledged messages first (same packet ids, DUP set); the
sender sends nothing new until those are acknowledged, so the broker sees the verdict
stream in order. A message may therefore reach a subscriber twice (a PUBACK lost with the
connection, or a crash before the spool's delivered mark was written); subscribers
de-duplicate by (camera_serial, frame_id) and can rely on frame_id never going backwards
apart from such repeats.

Never blocking, never silently losing: publish() only appends to memory (or the spool) under
a short lock. While the broker is unreachable, or when the memory queue is full, verdicts
go to the disk spool (if `spool_dir` is set) and are replayed in order after reconnect,
also by the next process if this one dies. Without a spool, or when the spool is full, the
newest verdicts are dropped and counted in stats()["dropped"].
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from edge_runtime.errors import PublishError
from edge_runtime.publish.options import PublishOptions
from edge_runtime.publish.spool import Message, Spool
from edge_runtime.status import STATUS_SCHEMA, STATUS_SCHEMA_VERSION, status_payload  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

_instances = itertools.count(1)


@dataclass
class _InFlight:
    msg: Message
    epoch: int  # connection epoch when it was handed to paho
    acked: bool = False
    failed: bool = False  # refused by paho for good; retired and counted as dropped


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
        self._mem: collections.deque[Message] = collections.deque()
        self._window: collections.deque[_InFlight] = collections.deque()
        self._by_mid: dict[int, _InFlight] = {}
        self._acks: list[int] = []
        self._status_mids: set[int] = set()
        self._spilling = False
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
        self._stats = dict.fromkeys(
            ("published", "acked", "queued", "spooled", "replayed", "recovered", "dropped", "reconnects", "corrupt"), 0
        )

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
        client.max_queued_messages_set(0)  # our own queue bounds memory
        client.will_set(self.status_topic, status_payload("offline", self.client_id, "connection lost"), qos=1, retain=options.retain_status)
        if username is not None or password is not None:
            client.username_pw_set(username or "", password)
        if tls:
            _configure_tls(client, options)
        self._spool: Spool | None = None
        if options.spool_dir is not None:
            self._spool = Spool(
                options.spool_dir,
                segment_bytes=options.spool_segment_bytes,
                max_bytes=options.spool_max_bytes,
                fsync=options.spool_fsync,
            )
            if self._spool.pending():
                # A previous run left verdicts behind: they go out first, new ones queue behind.
                log.info("spool %s: %d verdict(s) from an earlier run will be sent first", self._spool.dir, self._spool.pending())
                self._spilling = True
                self._stats["recovered"] = self._spool.pending()
        self._seq = self._spool.last_seq if self._spool else 0

        self._client = client
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-sender-{self.client_id}", daemon=True)
        try:
            client.connect_async(host, port, keepalive=options.keepalive_s)
        except (OSError, ValueError) as exc:
            if self._spool is not None:
                self._spool.close()
            raise PublishError(f"{_redact(uri)}: cannot start MQTT connection: {exc}") from None
        client.loop_start()
        self._sender.start()
        log.info(
            "MQTT publisher %s -> %s:%d prefix %r qos %d tls %s spool %s",
            self.client_id, host, port, topic_prefix, options.qos, tls, options.spool_dir or "off",
        )

    # -- the pipeline side -----------------------------------------------------------------
    def publish(self, verdict: Mapping[str, Any]) -> None:
        try:
            payload = json.dumps(verdict, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise PublishError(f"verdict cannot be encoded as JSON: {exc}") from None
        topic = self._topic(verdict)
        with self._cv:
            if self._closed:
                raise PublishError(f"{_redact(self.uri)}: publish() after close()")
            self._seq += 1
            msg = Message(self._seq, topic, payload)
            self._stats["published"] += 1
            spill = self._spilling or not self._connected or len(self._mem) >= self.options.queue_max
            if spill and self._spool is not None:
                self._spilling = True
                if self._spool.append(msg):
                    self._stats["spooled"] += 1
                else:
                    self._drop(msg, "spool full")
            elif len(self._mem) >= self.options.queue_max:
                self._drop(msg, "memory queue full and no spool_dir")
            else:
                self._mem.append(msg)
            self._cv.notify_all()

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Replace the station fields of the retained "online" status and send it when
        connected (latest wins: a status never queues behind verdicts or goes to the spool)."""
        with self._cv:
            if self._closed:
                return
            self._status_fields = dict(status)
            self._online_due = True
            self._cv.notify_all()

    def _drop(self, msg: Message, why: str) -> None:
        self._stats["dropped"] += 1
        n = self._stats["dropped"]
        if n & (n - 1) == 0:  # log 1st, 2nd, 4th, 8th... so a long outage does not flood the log
            log.warning("MQTT: verdict seq %d dropped (%s); %d dropped so far", msg.seq, why, n)

    def _topic(self, verdict: Mapping[str, Any]) -> str:
        if self.options.per_camera_topic:
            serial = str(verdict.get("camera_serial") or "unknown")
            serial = "".join("_" if c in "/+#" else c for c in serial)
            return f"{self.prefix}/{serial}/verdict"
        return f"{self.prefix}/verdict"

    def flush(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while not self._all_delivered():
                left = deadline - time.monotonic()
                if left <= 0:
                    if self._spool is not None:
                        self._spool.sync()
                    return False
                self._cv.wait(min(left, 0.1))
            if self._spool is not None:
                self._spool.sync()
            return True

    def _all_delivered(self) -> bool:
        return not self._mem and not self._window and (self._spool is None or self._spool.pending() == 0)

    def close(self) -> None:
        with self._cv:
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
            left = self._stats["published"] - self._stats["acked"] - self._stats["dropped"]
            self._persist_backlog()
            if self._spool is not None:
                self._spool.close()
        if not delivered:
            where = f"kept in spool {self._spool.dir}" if self._spool is not None else "LOST (no spool_dir)"
            log.warning("MQTT: closed with %d verdict(s) undelivered, %s", left, where)
        log.info("MQTT publisher closed: %s", self.stats())

    def _persist_backlog(self) -> None:
        """Unacknowledged and queued in-memory verdicts go to the spool (older than its content)."""
        backlog = [f.msg for f in self._window if not f.acked and not f.msg.from_spool]
        backlog += [m for m in self._mem if not m.from_spool]  # spool ones are still on disk
        self._mem.clear()
        if not backlog:
            return
        if self._spool is None:
            self._stats["dropped"] += len(backlog)
            return
        backlog.sort(key=lambda m: m.seq)
        written = self._spool.write_batch_before(backlog)
        self._stats["spooled"] += written
        self._stats["dropped"] += len(backlog) - written

    def stats(self) -> dict[str, int]:
        with self._cv:
            out = dict(self._stats)
            out["queued"] = len(self._mem)
            out["inflight"] = sum(1 for f in self._window if not f.acked)
            out["spool_pending"] = self._spool.pending() if self._spool is not None else 0
            out["corrupt"] = self._spool.corrupt if self._spool is not None else 0
            out["connected"] = int(self._connected)
            return out

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            text = f"MQTT broker {self.host}:{self.port} refused the connection: {reason_code}"
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
            log.warning("MQTT disconnected from %s:%d (%s); spooling until it is back", self.host, self.port, reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cv:
            self._acks.append(mid)
            self._cv.notify_all()

    # -- the sender thread -----------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            try:
                with self._cv:
                    job = self._next_job()
                    while job is None:
                        if self._stopping:
                            return
                        self._cv.wait(0.1)
                        job = self._next_job()
            except OSError as exc:  # the spool's disk failed under us: keep the thread alive
                log.error("MQTT sender: cannot read the spool: %s", exc)
                time.sleep(0.5)
                continue
            kind, msg, epoch = job
            try:
                self._send(kind, msg, epoch)
            except (ValueError, TypeError) as exc:
                # paho refuses this message for good (e.g. too large): count it, do not stall.
                log.error("MQTT: cannot publish %s: %s", f"verdict seq {msg.seq}" if msg else kind, exc)
                with self._cv:
                    if msg is not None:
                        for f in self._window:
                            if f.msg is msg:
                                f.acked = f.failed = True
                                self._stats["dropped"] += 1
                        self._advance()

    def _next_job(self) -> tuple[str, Message | None, int] | None:
        """Under the lock: process acks, then pick what to send next, if anything."""
        self._process_acks()
        if not self._connected:
            return None
        if self._online_due:
            self._online_due = False
            return ("online", None, self._epoch)
        if self._offline_due:
            self._offline_due = False
            return ("offline", None, self._epoch)
        if self._stopping:
            return None
        unacked = [f for f in self._window if not f.acked]
        # Messages from before the last (re)connect are being resent by paho: nothing new may
        # overtake them.
        if any(f.epoch < self._epoch for f in unacked):
            return None
        if len(unacked) >= self.options.max_inflight:
            return None
        if self._mem:
            msg = self._mem.popleft()
        elif self._spool is not None and self._spilling:
            msg = self._spool.read_next()
            if msg is None:
                return None
        else:
            return None
        self._window.append(_InFlight(msg, self._epoch))
        return ("verdict", msg, self._epoch)

    def _send(self, kind: str, msg: Message | None, epoch: int) -> None:
        if kind == "verdict":
            assert msg is not None
            info = self._client.publish(msg.topic, msg.payload, qos=self.options.qos, retain=False)
            with self._cv:
                entry = next(f for f in reversed(self._window) if f.msg is msg)
                if info.rc not in (0,) and info.rc != 4:  # 4 = MQTT_ERR_NO_CONN: paho keeps it
                    log.warning("MQTT publish of seq %d returned rc %s; retrying", msg.seq, info.rc)
                    self._window.remove(entry)
                    self._requeue(msg)
                    return
                if self.options.qos == 0:
                    entry.acked = True
                    self._advance()
                else:
                    self._by_mid[info.mid] = entry
                self._cv.notify_all()
            return
        state = "online" if kind == "online" else "offline"
        reason = "connected" if kind == "online" else "shutdown"
        with self._cv:
            fields = dict(self._status_fields)
        if kind == "online" and fields:
            reason = "running"
        payload = status_payload(state, self.client_id, reason, fields)
        info = self._client.publish(self.status_topic, payload, qos=1, retain=self.options.retain_status)
        with self._cv:
            self._status_mids.add(info.mid)
            if kind == "offline":
                self._offline_mid = info.mid
            self._cv.notify_all()

    def _requeue(self, msg: Message) -> None:
        # It was the next one in order, so the front of the memory queue (which is sent
        # before the spool) keeps the order, whichever store it came from.
        self._mem.appendleft(msg)
        self._cv.wait(0.05)  # do not spin on a persistent error

    def _process_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        for mid in acks:
            if mid in self._status_mids:
                self._status_mids.discard(mid)
                continue
            entry = self._by_mid.pop(mid, None)
            if entry is None:
                self._acks.append(mid)  # the sender has not registered it yet
                continue
            entry.acked = True
        if len(self._acks) > 1000:  # cannot happen with the registration order; guard memory
            self._acks.clear()
        self._advance()

    def _advance(self) -> None:
        """Retire the acknowledged prefix of the window (keeps the spool mark contiguous)."""
        spool_seq = 0
        while self._window and self._window[0].acked:
            f = self._window.popleft()
            if f.msg.from_spool:
                spool_seq = f.msg.seq
            if f.failed:
                continue
            self._stats["acked"] += 1
            if f.msg.from_spool:
                self._stats["replayed"] += 1
        if self._spool is not None:
            if spool_seq:
                self._spool.commit(spool_seq)
            if self._spilling and not self._mem and self._spool.pending() == 0 and not self._window and self._connected:
                # Backlog fully delivered: back to the fast in-memory path.
                self._spool.commit(self._spool.last_seq, force=True)
                self._spilling = False
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
