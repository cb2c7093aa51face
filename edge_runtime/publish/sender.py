"""The MQTT sender: the one thread that moves verdicts from the outbox (spool.py) through the
in-flight window (window.py) to the connection (connection.py), and sends the retained
status records.

Threads and state (the publisher's Condition `cv` guards everything marked "cv"):
  S1  only the sender thread reads the outbox (read_after), deletes from it (remove_through),
      fills `_ahead`, and calls window.add/register/take_back/fail; it hands messages to paho
      in seq order (window W1, W3), so the broker sees the verdicts in order.
  S2  `stored_through` (cv) is the last seq the outbox stored; the pipeline thread raises it
      in MQTTPublisher.publish_many after the append returned (durable before counted, P1).
  S3  the window's acked side moves only through take_acks() + retire() under cv; the outbox
      deletes through `window.acked_through` only (at-least-once, P2).
  S4  `status` (cv) is a slot, not a queue: publish_status() replaces its fields (latest
      wins) and the sender sends an "online" record once per connection epoch and after each
      change; close() asks for one "offline" record. Status messages never enter the outbox.
  S5  disk I/O (read ahead, delete, batch sync) and paho calls run outside cv (P5); only the
      sender does them, so what it read stays valid when it takes cv again.
  S6  `counters` (cv) are shared with the publisher; the sender adds acked, replayed and the
      messages paho refused for good (dropped).
  S7  the thread holds the sender, never the publisher (weakref.finalize can run).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.publish.connection import MQTTConnection
from edge_runtime.publish.spool import DurableQueue, MemoryQueue, Message
from edge_runtime.publish.window import InFlight, InFlightWindow
from edge_runtime.status import status_payload

log = logging.getLogger(__name__)

__all__ = ["Sender", "StatusSlot"]

READ_AHEAD = 256  # messages read from the outbox per query
DELETE_EVERY_S = 0.1  # acknowledged messages are deleted in groups, at most this often


@dataclass
class StatusSlot:
    """The retained status to send (S4); every field is guarded by the publisher's `cv`.

    Attributes:
        fields: the station fields of the latest "online" record.
        changed: publish_status() gave new fields not yet sent.
        online_epoch: the connection epoch whose "online" record went out (0: none yet).
        offline_due: close() asked for the "offline" record.
        offline_mid: paho's message id of that record, once handed over.
        mids: message ids of status records awaiting their PUBACK.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    changed: bool = False
    online_epoch: int = 0
    offline_due: bool = False
    offline_mid: int | None = None
    mids: set[int] = field(default_factory=set)

    def offline_pending(self) -> bool:
        """True while the "offline" record is asked for or not yet acknowledged."""
        return self.offline_due or (self.offline_mid is not None and self.offline_mid in self.mids)


class Sender:
    """The sender thread and what only it touches (see the module docstring).

    Args:
        cv: the publisher's Condition.
        outbox: the durable or memory queue.
        connection: the MQTT connection.
        qos: the verdicts' QoS.
        status: (topic, client_id, retain) of the retained status records.
        counters: the publisher's counters (guarded by `cv`).
        max_inflight: the window size.
    """

    def __init__(
        self,
        cv: threading.Condition,
        outbox: DurableQueue | MemoryQueue,
        connection: MQTTConnection,
        *,
        qos: int,
        status: tuple[str, str, bool],
        counters: dict[str, int],
        max_inflight: int,
    ) -> None:
        self.cv = cv
        self.outbox = outbox
        self.connection = connection
        self.qos = qos
        self.status_topic, self.client_id, self.retain_status = status
        self.counters = counters
        self.status = StatusSlot()
        self.window = InFlightWindow(max_inflight, acked_through=outbox.first_seq - 1)
        self.stored_through = outbox.last_seq
        self.recovered_through = outbox.last_seq
        self.stopping = False
        self._ahead: collections.deque[Message] = collections.deque()  # read, not yet sent
        self._deleted_through = self.window.acked_through
        self._last_delete = 0.0
        self._thread = threading.Thread(target=self._run, name=f"mqtt-sender-{self.client_id}", daemon=True)

    def start(self) -> None:
        """Start the sender thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to finish (no new verdicts are handed over) and join it."""
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)

    def settle(self) -> int:
        """Under `cv`: take the acks that arrived, retire the acknowledged prefix, and return
        the seq through which everything is acknowledged."""
        self._process_acks()
        return self.window.acked_through

    def wait_acked(self, timeout_s: float) -> bool:
        """Wait until everything stored so far is acknowledged (True) or timeout (False)."""
        deadline = time.monotonic() + timeout_s
        with self.cv:
            while self.window.acked_through < self.stored_through:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(min(left, 0.1))
            return self.window.acked_through >= self.stored_through

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.cv:
                job = self._next_job()
                while job is None and not self.stopping and not self._housekeeping_due():
                    self.cv.wait(0.1)
                    job = self._next_job()
                if job is None and self.stopping:
                    return
                delete_through = self.window.acked_through
            if job is None:
                self._housekeeping(delete_through)
            else:
                self._send(*job)

    def _send(self, kind: str, msg: Message | None, entry: InFlight | None) -> None:
        what = f"verdict seq {msg.seq}" if msg else kind
        try:
            if msg is not None and entry is not None:
                self._send_verdict(msg, entry)
            else:
                self._send_status(kind)
        except (ValueError, TypeError) as exc:
            # paho refuses this message for good (e.g. too large): count it, do not stall.
            log.error("MQTT: cannot publish %s: %s", what, exc)
            if entry is not None:
                with self.cv:
                    self.window.fail(entry)
                    self._advance()
        except Exception as exc:
            log.error("MQTT: publishing %s failed: %s; retrying", what, exc)
            with self.cv:
                if entry is not None:
                    self.window.take_back(entry)
                    self._ahead.clear()
                elif kind == "online":
                    self.status.changed = True
                self.cv.wait(0.5)

    def _housekeeping_due(self) -> bool:
        """Under cv: True when the sender has disk work (read ahead, delete acked, sync)."""
        if not self._ahead and self.window.sent_seq < self.stored_through and self.connection.connected:
            return True
        acked = self.window.acked_through
        if acked > self._deleted_through and (
            acked >= self.stored_through or time.monotonic() - self._last_delete >= DELETE_EVERY_S
        ):
            return True
        return self.outbox.sync_due()

    def _housekeeping(self, delete_through: int) -> None:
        """Outside cv (S5): sync a due `batch` spool, delete what is acknowledged, read ahead."""
        if self.outbox.sync_due():
            self.outbox.sync()
        if delete_through > self._deleted_through:
            self.outbox.remove_through(delete_through)
            self._deleted_through = delete_through
            self._last_delete = time.monotonic()
        if not self._ahead:
            after = self.window.sent_seq
            try:
                batch = self.outbox.read_after(after, READ_AHEAD)
            except Exception as exc:
                log.error("MQTT sender: cannot read the spool: %s", exc)
                time.sleep(0.5)
                return
            if not batch:  # cannot happen while Q1-Q3 hold; never spin if it does
                time.sleep(0.05)
            with self.cv:
                if self.window.sent_seq == after:  # only this thread moves it; belt and braces
                    self._ahead.extend(batch)

    def _next_job(self) -> tuple[str, Message | None, InFlight | None] | None:
        """Under cv: process acks, then pick what to send next, if anything."""
        self._process_acks()
        link = self.connection
        if not link.connected:
            return None
        if self.status.changed or self.status.online_epoch != link.epoch:
            self.status.changed = False
            self.status.online_epoch = link.epoch
            return ("online", None, None)
        if self.status.offline_due:
            self.status.offline_due = False
            return ("offline", None, None)
        if self.stopping or not self._ahead or not self.window.can_send(link.epoch):
            return None
        msg = self._ahead.popleft()
        return ("verdict", msg, self.window.add(msg, link.epoch))

    def _send_verdict(self, msg: Message, entry: InFlight) -> None:
        info = self.connection.publish(msg.topic, msg.payload, self.qos, False)
        with self.cv:
            if info.rc not in (0, 4):  # 4 = MQTT_ERR_NO_CONN: paho keeps it and sends it later
                log.warning("MQTT publish of seq %d returned rc %s; retrying", msg.seq, info.rc)
                self.window.take_back(entry)
                self._ahead.clear()  # read again from the outbox, starting with this one
                self.cv.wait(0.05)  # do not spin on a persistent error
                return
            if self.qos == 0:
                entry.acked = True
            else:
                self.window.register(entry, info.mid)
            self._advance()

    def _send_status(self, kind: str) -> None:
        with self.cv:
            fields = dict(self.status.fields)
        if kind == "online":
            payload = status_payload("online", self.client_id, "running" if fields else "connected", fields)
        else:
            payload = status_payload("offline", self.client_id, "shutdown", fields)
        info = self.connection.publish(self.status_topic, payload, 1, self.retain_status)
        with self.cv:
            if not self.window.claim_early(info.mid):
                self.status.mids.add(info.mid)
            if kind == "offline":
                self.status.offline_mid = info.mid
            self.cv.notify_all()

    def _process_acks(self) -> None:
        acks = self.connection.take_acks()
        if not acks:
            return
        for mid in acks:
            if mid in self.status.mids:
                self.status.mids.discard(mid)
            else:
                self.window.ack(mid)
        self._advance()

    def _advance(self) -> None:
        """Under cv: retire the acknowledged prefix of the window and count it."""
        for f in self.window.retire():
            if f.failed:
                self.counters["dropped"] += 1
                continue
            self.counters["acked"] += 1
            if f.msg.seq <= self.recovered_through:
                self.counters["replayed"] += 1
        self.cv.notify_all()
