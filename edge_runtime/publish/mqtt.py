"""MQTT publisher (paho-mqtt 2, CallbackAPIVersion.VERSION2, MQTT 3.1.1).

Topics (prefix from the URI path or `topic_prefix`, default "clipinspect"):
  <prefix>/verdict                 one verdict JSON per frame, QoS 1, not retained
  <prefix>/<camera_serial>/verdict instead, when `per_camera_topic` is true
  <prefix>/status                  retained JSON {"state": "online"|"offline", ...}
                                   (edge_runtime/status.py); publish_status() adds the
                                   station's counters to the "online" record; the broker
                                   publishes the "offline" last will when the client
                                   vanishes; close() publishes "offline" itself.

The parts, each with its invariants at the top of its module:
  durable queue  edge_runtime/publish/spool.py (the outbox: sqlite WAL, or memory without
                 spool_dir), invariants Q1-Q4
  in-flight      edge_runtime/publish/window.py, invariants W1-W4
  connection     edge_runtime/publish/connection.py: URI -> broker target, paho's client,
                 TLS, credentials, connect/backoff/reconnect, its callbacks; C1-C5
  sender         edge_runtime/publish/sender.py: the one thread that sends; S1-S7
  this module    the publisher the pipeline sees: wiring, publish/flush/close, stats

Threads: the pipeline (publish_many), paho's network thread (connection callbacks), the
sender thread, and whoever calls flush/close/stats. They share one Condition `cv`; each part
says which of its fields it guards. The life cycle (closed check, idempotent close,
weakref.finalize of the sender thread, paho's thread and the sqlite handle) is PublisherBase's.

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
  P5  the lock `cv` is never held during disk I/O or a paho call that can block, so paho's
      callbacks (acks, connects) are never stuck behind an fsync.

Delivery is therefore at-least-once and in order. A verdict may reach a subscriber twice (a
PUBACK lost with the connection, or a crash before the delete of acknowledged messages was
written); a repeat is byte-for-byte the same payload. De-duplicate on
(camera_serial, frame_id, capture_ts_ns): frame_id alone restarts at 0 with each process.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from edge_runtime.errors import PublishError
from edge_runtime.publish.base import PublisherBase
from edge_runtime.publish.connection import BrokerTarget, MQTTConnection
from edge_runtime.publish.jsonl import encode_line
from edge_runtime.publish.options import PublishOptions
from edge_runtime.publish.sender import Sender
from edge_runtime.publish.spool import DurableQueue, MemoryQueue
from edge_runtime.status import status_payload

log = logging.getLogger(__name__)

__all__ = ["MQTTPublisher", "open_outbox"]

_instances = itertools.count(1)
_COUNTERS = ("published", "acked", "spooled", "replayed", "recovered", "dropped")


def open_outbox(options: PublishOptions) -> DurableQueue | MemoryQueue:
    """The outbox the options ask for: sqlite under `spool_dir`, else a bounded memory queue.

    Args:
        options: the publish options.

    Returns:
        The open queue.

    Raises:
        PublishError: the spool directory is not writable or is in use.
    """
    if options.spool_dir is None:
        return MemoryQueue(options.queue_max)
    return DurableQueue(
        options.spool_dir,
        max_bytes=options.spool_max_bytes,
        fsync=options.spool_fsync,
        sync_interval_s=options.spool_sync_interval_s,
    )


def _release(sender: Sender, connection: MQTTConnection, outbox: DurableQueue | MemoryQueue) -> int:
    """The hard teardown (weakref.finalize; holds no publisher): stop the sender and paho's
    thread, delete what is acknowledged, close the outbox. Returns the verdicts left over."""
    sender.stop()
    connection.stop()
    with sender.cv:
        through = sender.settle()
        left = sender.stored_through - through
    outbox.remove_through(through)
    outbox.close()
    return left


class MQTTPublisher(PublisherBase):
    """Publishes verdicts to an MQTT broker, durable before counted, in order, at least once.

    Built with `from_uri`; see the module docstring for topics, parts and invariants.

    Args:
        target: the broker, credentials and topic prefix.
        options: the publish options.

    Raises:
        PublishError: TLS files, the spool directory or the broker address are unusable.
        MissingDependency: paho-mqtt is not installed.
    """

    scheme = "mqtt"

    def __init__(self, target: BrokerTarget, options: PublishOptions) -> None:
        super().__init__(target.uri)
        self.options = options
        self.target = target
        self.host, self.port, self.prefix = target.host, target.port, target.prefix
        # Unique per publisher: two publishers with one id would keep kicking each other off.
        self.client_id = options.client_id or f"clipinspect-{socket.gethostname()}-{os.getpid()}-{next(_instances)}"
        self.status_topic = f"{target.prefix}/status"
        self._cv = threading.Condition()
        self._counters = dict.fromkeys(_COUNTERS, 0)
        will = (self.status_topic, status_payload("offline", self.client_id, "connection lost"), options.retain_status)
        self._connection = MQTTConnection(target, options, self.client_id, self._cv, will)
        self._outbox = open_outbox(options)
        self._counters["recovered"] = self._outbox.pending()
        if self._counters["recovered"]:
            # A previous run left verdicts behind: they go out first, new ones queue behind.
            log.info(
                "spool %s: %d verdict(s) from an earlier run will be sent first",
                options.spool_dir,
                self._counters["recovered"],
            )
        if not self._outbox.durable:
            log.warning(
                "MQTT publisher without publish.options.spool_dir: up to %d verdicts wait in memory only; "
                "a crash or power cut loses those not yet acknowledged",
                options.queue_max,
            )
        self._sender = Sender(
            self._cv,
            self._outbox,
            self._connection,
            qos=options.qos,
            status=(self.status_topic, self.client_id, options.retain_status),
            counters=self._counters,
            max_inflight=options.max_inflight,
        )
        self._start()

    def _start(self) -> None:
        try:
            self._connection.start()
        except PublishError:
            self._outbox.close()
            raise
        self._release_on_gc(_release, self._sender, self._connection, self._outbox)
        self._sender.start()
        opts = self.options
        log.info(
            "MQTT publisher %s -> %s:%d prefix %r qos %d tls %s spool %s",
            self.client_id,
            self.host,
            self.port,
            self.prefix,
            opts.qos,
            self.target.tls,
            f"{opts.spool_dir} (fsync {opts.spool_fsync})" if opts.spool_dir else "off",
        )

    @classmethod
    def from_uri(cls, uri: str, options: PublishOptions) -> MQTTPublisher:
        """Open `mqtt://[user[:password]@]host[:port][/prefix]` or `mqtts://...` (TLS).

        Args:
            uri: the publisher URI (credentials in it win over the options).
            options: the publish options.

        Returns:
            The publisher, connecting in the background.

        Raises:
            PublishError: one line for a bad URI, TLS file or spool directory.
        """
        return cls(BrokerTarget.from_uri(uri, options), options)

    # -- PublisherBase hooks --------------------------------------------------------------------
    def _publish_batch(self, items: list[Mapping[str, Any]]) -> None:
        """Store the verdicts in the outbox in one transaction (P1), in order. A verdict that
        cannot be encoded raises PublishError after the ones before it are stored."""
        encoded: list[tuple[str, bytes]] = []
        error: PublishError | None = None
        for v in items:
            try:
                encoded.append((self._topic(v), encode_line(v).encode("utf-8")))
            except PublishError as exc:
                error = exc
                break
        stored = self._outbox.append(encoded) if encoded else []  # disk I/O outside cv (P5)
        with self._cv:
            self._counters["published"] += len(encoded)
            if self._outbox.durable:
                self._counters["spooled"] += len(stored)
            if stored:
                self._sender.stored_through = stored[-1].seq
            for _ in range(len(encoded) - len(stored)):
                self._drop("spool full or unwritable" if self._outbox.durable else "memory queue full and no spool_dir")
            self._cv.notify_all()
        if error is not None:
            raise error

    def _publish_status(self, status: Mapping[str, Any]) -> None:
        """Replace the station fields of the retained "online" status; the sender sends it
        when connected (latest wins: never queued behind verdicts, never spooled)."""
        with self._cv:
            self._sender.status.fields = dict(status)
            self._sender.status.changed = True
            self._cv.notify_all()

    def _flush(self, timeout_s: float) -> bool:
        """Wait until every verdict stored so far is acknowledged; either way sync the outbox
        (spool_fsync batch)."""
        done = self._sender.wait_acked(timeout_s)
        self._outbox.sync()
        return done

    def _close(self) -> bool:
        delivered = self._flush(self.options.close_timeout_s)
        self._say_offline()
        left = (self._finalizer() if self._finalizer is not None else 0) or 0
        if not self._outbox.durable:
            with self._cv:
                self._counters["dropped"] += left  # memory only: gone with the process
        if not delivered:
            where = f"kept in spool {self.options.spool_dir}" if self._outbox.durable else "LOST (no spool_dir)"
            log.warning("MQTT: closed with %d verdict(s) undelivered, %s", left, where)
        log.info("MQTT publisher closed: %s", self.stats())
        return delivered

    def _say_offline(self) -> None:
        """Best effort: publish the "offline" status and wait briefly for its PUBACK."""
        slot, link = self._sender.status, self._connection
        with self._cv:
            if link.connected:
                slot.offline_due = True
                self._cv.notify_all()
            wait_s = min(2.0, self.options.close_timeout_s + 0.5)
            self._cv.wait_for(lambda: not link.connected or not slot.offline_pending(), timeout=wait_s)

    # -- the rest -------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters: published, acked, spooled, replayed, recovered, dropped, reconnects, and
        now: queued (stored, not yet sent), inflight, spool_pending, corrupt, connected."""
        with self._cv:
            sender, window = self._sender, self._sender.window
            out = dict(self._counters)
            out["reconnects"] = self._connection.reconnects
            out["queued"] = sender.stored_through - window.sent_seq
            out["inflight"] = window.unacked()
            out["spool_pending"] = sender.stored_through - window.acked_through if self._outbox.durable else 0
            out["corrupt"] = self._outbox.corrupt
            out["connected"] = int(self._connection.connected)
            return out

    def _drop(self, why: str) -> None:
        self._counters["dropped"] += 1
        n = self._counters["dropped"]
        if n & (n - 1) == 0:  # log 1st, 2nd, 4th, 8th... so a long outage does not flood the log
            log.warning("MQTT: verdict dropped (%s); %d dropped so far", why, n)

    def _topic(self, verdict: Mapping[str, Any]) -> str:
        if self.options.per_camera_topic:
            serial = str(verdict.get("camera_serial") or "unknown")
            serial = "".join("_" if c in "/+#" else c for c in serial)
            return f"{self.prefix}/{serial}/verdict"
        return f"{self.prefix}/verdict"
