"""The outbox: an ordered queue of messages waiting for their PUBACK.

Two kinds with one interface (the MQTT publisher does not care which it holds):

  DurableQueue  stdlib sqlite3 in WAL mode, `<spool_dir>/spool.db`, one table
                outbox(seq INTEGER PRIMARY KEY, topic, payload). A message is appended in
                a committed transaction BEFORE append() returns, and deleted only when
                the publisher has its PUBACK. Appends come in batches: one transaction
                (one fsync) per batch = group commit.
  MemoryQueue   a bounded deque (`queue_max`), used when no spool_dir is configured:
                a crash loses what it holds.

Invariants (both kinds; the publisher relies on them):
  Q1  seqs are assigned by append(), strictly increasing with no gaps, in call order.
  Q2  append(batch) stores a prefix of the batch (all of it unless the queue is full or the
      disk fails) and returns exactly the stored messages; nothing else is counted.
  Q3  read_after(s) yields stored messages with seq > s in seq order; remove_through(s)
      deletes seq <= s. Nothing else removes a message.
  Q4  a DurableQueue reopened after a crash holds every message whose append() returned
      and that was not removed (SIGKILL: any `fsync` setting; power cut: see POWER_CUT).

Power-cut promise per `spool_fsync` (sqlite `PRAGMA synchronous` in WAL mode; POWER_CUT):
  always  FULL: every verdict counted as published survives (the WAL is fsynced at each
          group commit, before append() returns)
  batch   NORMAL: verdicts counted in the last `spool_sync_interval_s` (default 1 s) before
          the cut may be lost; the spool stays consistent
  never   OFF: anything the OS had not yet written back may be lost, and sqlite may find the
          file damaged (it is then moved aside and the run goes on)
A process crash (SIGKILL, OOM, segfault) loses nothing in any mode: a committed transaction
is in the OS page cache.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from edge_runtime.errors import PublishError

log = logging.getLogger(__name__)

FsyncMode = Literal["always", "batch", "never"]

SYNCHRONOUS: dict[str, str] = {"always": "FULL", "batch": "NORMAL", "never": "OFF"}

POWER_CUT: dict[str, str] = {
    "always": "every verdict counted as published survives (the WAL is fsynced at each group commit)",
    "batch": "verdicts counted in the last `spool_sync_interval_s` (default 1 s) before the cut may be lost; the spool stays consistent",
    "never": "anything the OS had not yet written back may be lost, and sqlite may find the file damaged (it is then moved aside and the run goes on)",
}

DB_NAME = "spool.db"


@dataclass(frozen=True)
class Message:
    """One stored verdict: its outbox seq, topic and JSON payload."""

    seq: int
    topic: str
    payload: bytes


class MemoryQueue:
    """The outbox without a spool_dir: bounded by `max_items`, lost on a crash."""

    durable = False
    corrupt = 0

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: collections.deque[Message] = collections.deque()
        self._lock = threading.Lock()
        self.last_seq = 0
        self.first_seq = 1  # lowest seq still held (last_seq + 1 when empty)

    def append(self, items: Sequence[tuple[str, bytes]]) -> list[Message]:
        """Keep a prefix of `items` (as many as fit under `max_items`) and return it (Q1, Q2)."""
        with self._lock:
            room = max(0, self.max_items - len(self._items))
            out = []
            for topic, payload in items[:room]:
                self.last_seq += 1
                out.append(Message(self.last_seq, topic, payload))
            self._items.extend(out)
            return out

    def read_after(self, seq: int, limit: int) -> list[Message]:
        """Up to `limit` held messages with seq > `seq`, in order (Q3)."""
        with self._lock:
            if not self._items:
                return []
            start = max(0, seq + 1 - self._items[0].seq)
            return [self._items[i] for i in range(start, min(len(self._items), start + limit))]

    def remove_through(self, seq: int) -> None:
        """Forget every message with seq <= `seq` (acknowledged)."""
        with self._lock:
            while self._items and self._items[0].seq <= seq:
                self._items.popleft()

    def pending(self) -> int:
        """How many messages are held."""
        with self._lock:
            return len(self._items)

    def sync(self) -> None:
        """Nothing to sync in memory."""

    def sync_due(self) -> bool:
        """Never: nothing to sync in memory."""
        return False

    def close(self) -> None:
        """Nothing to release (what is held is lost with the process)."""


class DurableQueue:
    """The sqlite outbox in `directory` (created; one publisher at a time, flock)."""

    durable = True

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 256 << 20,
        fsync: FsyncMode = "always",
        sync_interval_s: float = 1.0,
    ) -> None:
        if fsync not in SYNCHRONOUS:
            raise PublishError(f"spool_fsync must be one of {', '.join(SYNCHRONOUS)}, got {fsync!r}")
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise PublishError(f"spool directory {self.dir} is not writable: {exc.strerror or exc}") from None
        self._lock_fh = _lock_dir(self.dir)
        self.path = self.dir / DB_NAME
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.sync_interval_s = sync_interval_s
        self.corrupt = 0
        self._lock = threading.Lock()
        self._last_sync = time.monotonic()
        self._unsynced = False  # spool_fsync batch: commits since the last WAL sync
        self._disk_error = ""
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            self._db = self._move_aside(exc)
        row = self._db.execute(
            "SELECT min(seq), max(seq), count(*), total(length(CAST(topic AS BLOB)) + length(payload)) FROM outbox"
        ).fetchone()
        self.last_seq = int(row[1] or 0)
        self.first_seq = int(row[0] or self.last_seq + 1)
        self._count = int(row[2])
        self.nbytes = int(row[3])
        imported = _import_jsonl_segments(self)
        if imported:
            log.info("spool %s: imported %d undelivered verdict(s) from the old JSON-lines spool", self.dir, imported)

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is one transaction.
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise PublishError(
                    f"spool {self.path}: sqlite refused WAL mode (got {mode}); is it on a network file system?"
                )
            db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.fsync]}")
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)"
            )
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> sqlite3.Connection:
        """A damaged file (possible after a power cut with spool_fsync: never): keep it for
        forensics, say so once, and go on with an empty spool rather than stop the line."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{self.path}.damaged-{stamp}{suffix}")
        self.corrupt = 1
        log.error(
            "spool %s is damaged (%s); moved aside as %s.damaged-%s, starting empty", self.path, exc, DB_NAME, stamp
        )
        return self._open()

    # -- the pipeline side ----------------------------------------------------------------
    def append(self, items: Sequence[tuple[str, bytes]]) -> list[Message]:
        """Store a prefix of `items` in one committed transaction and return it (Q1, Q2)."""
        with self._lock:
            out: list[Message] = []
            size = self.nbytes
            for topic, payload in items:
                n = len(topic.encode("utf-8")) + len(payload)
                if size + n > self.max_bytes:
                    break
                size += n
                out.append(Message(self.last_seq + 1 + len(out), topic, payload))
            if not out:
                return out
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO outbox (seq, topic, payload) VALUES (?, ?, ?)",
                    [(m.seq, m.topic, m.payload) for m in out],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._say_disk_error(f"cannot store {len(out)} verdict(s): {exc}")
                return []
            self._disk_error = ""
            self.last_seq = out[-1].seq
            self._count += len(out)
            self.nbytes = size
            if self.fsync == "batch":
                self._unsynced = True
                if time.monotonic() - self._last_sync >= self.sync_interval_s:
                    self._checkpoint()
            return out

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _say_disk_error(self, text: str) -> None:
        if text != self._disk_error:  # once per kind of failure, not once per verdict
            log.error("spool %s: %s", self.path, text)
            self._disk_error = text

    def _checkpoint(self) -> None:
        # With synchronous=NORMAL the WAL is fsynced before a checkpoint copies it back: this
        # is the "batch" sync point.
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            self._say_disk_error(f"checkpoint failed: {exc}")
            self._last_sync = time.monotonic()  # try again one interval later, not in a spin
            return
        self._last_sync = time.monotonic()
        self._unsynced = False

    # -- the sender side ------------------------------------------------------------------
    def read_after(self, seq: int, limit: int) -> list[Message]:
        """Up to `limit` stored messages with seq > `seq`, in seq order (Q3)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [Message(int(s), str(t), bytes(p)) for s, t, p in rows]

    def remove_through(self, seq: int) -> None:
        """Delete everything up to `seq` (acknowledged). Losing a delete to a crash only means a
        repeat on the next start (at-least-once), so it needs no fsync of its own: the next
        append's commit syncs the WAL, deletes included."""
        with self._lock:
            if seq < self.first_seq:
                return
            relax = self.fsync == "always"
            try:
                if relax:
                    self._db.execute("PRAGMA synchronous=NORMAL")  # this commit without its own fsync
                self._db.execute("BEGIN IMMEDIATE")
                n, size = self._db.execute(
                    "SELECT count(*), total(length(CAST(topic AS BLOB)) + length(payload)) FROM outbox WHERE seq <= ?",
                    (seq,),
                ).fetchone()
                self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._say_disk_error(f"cannot delete delivered verdicts: {exc}")
                return
            finally:
                if relax:
                    self._restore_full_sync()
            self._count -= int(n)
            self.nbytes -= int(size)
            self.first_seq = seq + 1

    def _restore_full_sync(self) -> None:
        """Back to synchronous=FULL after a relaxed delete; a failure is said, never raised
        into the sender thread (the next append's commit would run without its fsync)."""
        try:
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            self._say_disk_error(f"cannot restore synchronous=FULL: {exc}")

    def pending(self) -> int:
        """How many messages are stored."""
        with self._lock:
            return self._count

    def sync(self) -> None:
        """Checkpoint the WAL now (the `batch` sync point; also on flush and close)."""
        with self._lock:
            if self.fsync != "never":
                self._checkpoint()

    def sync_due(self) -> bool:
        """spool_fsync batch: True once commits have waited `sync_interval_s` unsynced (the
        sender then calls sync(), so an idle line keeps the promise too). Read without the
        lock: a stale answer only moves the sync by one sender tick."""
        return self._unsynced and time.monotonic() - self._last_sync >= self.sync_interval_s

    def close(self) -> None:
        """Checkpoint, close the database and release the directory lock."""
        with self._lock:
            try:
                if self._count == 0:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # leaves a tiny file behind
                elif self.fsync != "never":
                    self._checkpoint()
                self._db.close()
            except sqlite3.Error as exc:
                log.error("spool %s: close failed: %s", self.path, exc)
            if self._lock_fh is not None:
                self._lock_fh.close()  # releases the flock
                self._lock_fh = None


def _import_jsonl_segments(q: DurableQueue) -> int:
    """Carry over what an earlier version's JSON-lines spool (seg-*.jsonl + committed) still
    held, in order and behind nothing newer; then remove those files."""
    segs = sorted(q.dir.glob("seg-*.jsonl"))
    if not segs:
        return 0
    try:
        committed = int((q.dir / "committed").read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        committed = 0
    items: list[tuple[int, str, bytes]] = []
    for path in segs:
        for line in path.read_bytes().splitlines(keepends=True):
            try:
                obj = json.loads(line)
                seq, topic, payload = int(obj["seq"]), str(obj["topic"]), str(obj["payload"]).encode("utf-8")
            except (ValueError, KeyError, TypeError):
                continue  # torn last line of a segment
            if seq > committed:
                items.append((seq, topic, payload))
    items.sort(key=lambda it: it[0])
    stored = q.append([(t, p) for _, t, p in items])
    if len(stored) < len(items):
        raise PublishError(
            f"spool {q.dir}: cannot import the old JSON-lines spool ({len(items)} verdicts); spool_max_bytes too small?"
        )
    for path in segs + [q.dir / "committed"]:
        path.unlink(missing_ok=True)
    return len(stored)


def _lock_dir(path: Path) -> BinaryIO | None:
    """One publisher per spool directory: two would interleave and replay each other's data.
    The lock dies with the process, so a crashed run never blocks the next one."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, documented
        return None
    fh = (path / "lock").open("ab")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise PublishError(f"spool directory {path} is in use by another publisher") from None
    return fh
