"""Disk spool: an append-only, ordered, bounded queue of messages that survives a crash.

Layout of a spool directory:
  seg-<first seq, 20 digits>.jsonl   one JSON object per line: {"seq", "topic", "payload"}
  committed                          the highest seq known delivered (written atomically)

Segments are read in the order of their first seq, lines in file order; seqs increase
strictly, so "committed" is a low-water mark: on replay every line with seq <= committed is
skipped. A crash between delivery and the next commit write replays a few messages twice
(at-least-once; subscribers de-duplicate by frame_id). A torn last line (power loss in
mid-write) is skipped and counted in `corrupt`.

The spool is bounded by `max_bytes`. When full, new messages are refused (the oldest
backlog is kept so the order has no holes) and the caller counts them as dropped.
Not thread-safe: the MQTT publisher calls it under its own lock.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from edge_runtime.errors import PublishError

log = logging.getLogger(__name__)

_PREFIX = "seg-"
_SUFFIX = ".jsonl"
_COMMITTED = "committed"
# Write the committed mark at most this often while replaying (it is rewritten on close).
_COMMIT_EVERY_S = 0.2


@dataclass(frozen=True)
class Message:
    seq: int
    topic: str
    payload: bytes
    from_spool: bool = False


@dataclass
class _Segment:
    path: Path
    first_seq: int
    last_seq: int
    nbytes: int
    lines: int = 0


@dataclass
class _Reader:
    seg: _Segment | None = None  # None: start at the first segment
    offset: int = 0
    fh: BinaryIO | None = field(default=None, repr=False)


class Spool:
    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 1 << 20,
        max_bytes: int = 256 << 20,
        fsync: Literal["always", "batch", "never"] = "always",
    ) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise PublishError(f"spool directory {self.dir} is not writable: {exc.strerror or exc}") from None
        self._lock_fh = _lock_dir(self.dir)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.committed = self._read_committed()
        self._committed_on_disk = self.committed
        self._last_commit_write = 0.0
        self._segments: list[_Segment] = []
        self._writer: BinaryIO | None = None
        self._wseg: _Segment | None = None
        self._reader = _Reader()
        self.unread = 0
        self.corrupt = 0
        self.last_seq = self.committed
        self._scan()

    # -- state ---------------------------------------------------------------------------
    def _read_committed(self) -> int:
        p = self.dir / _COMMITTED
        if not p.is_file():
            return 0
        try:
            return int(p.read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            log.warning("spool %s: unreadable committed mark, replaying everything", self.dir)
            return 0

    def _scan(self) -> None:
        """Index the segments left by an earlier run (count what is still to send)."""
        for path in sorted(self.dir.glob(f"{_PREFIX}*{_SUFFIX}")):
            try:
                first = int(path.name[len(_PREFIX) : -len(_SUFFIX)])
            except ValueError:
                continue
            seg = _Segment(path, first, first - 1, path.stat().st_size)
            with path.open("rb") as fh:
                for line in fh:
                    msg = self._decode(line, path)
                    if msg is None:
                        continue
                    seg.last_seq = max(seg.last_seq, msg.seq)
                    seg.lines += 1
                    if msg.seq > self.committed:
                        self.unread += 1
            if seg.lines == 0 or seg.last_seq <= self.committed:
                path.unlink(missing_ok=True)
                continue
            self._segments.append(seg)
            self.last_seq = max(self.last_seq, seg.last_seq)
        self.corrupt = 0  # counted again when the reader meets them

    def _decode(self, line: bytes, path: Path) -> Message | None:
        if not line.endswith(b"\n"):
            return None  # torn write; the reader counts it
        try:
            obj = json.loads(line)
            return Message(int(obj["seq"]), str(obj["topic"]), str(obj["payload"]).encode("utf-8"), True)
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self._segments)

    def pending(self) -> int:
        """Messages on disk not yet handed to the sender."""
        return self.unread

    # -- writing -------------------------------------------------------------------------
    def append(self, msg: Message) -> bool:
        """Append one message; False when the spool is full (the caller counts a drop)."""
        line = json.dumps({"seq": msg.seq, "topic": msg.topic, "payload": msg.payload.decode("utf-8")}, separators=(",", ":")).encode("utf-8") + b"\n"
        if self.total_bytes + len(line) > self.max_bytes:
            return False
        seg = self._wseg if self._writer is not None else None
        if seg is None or seg.nbytes + len(line) > self.segment_bytes or msg.seq <= seg.last_seq:
            seg = self._rotate(msg.seq)
        assert self._writer is not None
        try:
            self._writer.write(line)
            self._writer.flush()
            if self.fsync == "always":
                os.fsync(self._writer.fileno())
        except OSError as exc:
            log.error("spool %s: cannot write (%s); message %d dropped", seg.path, exc, msg.seq)
            return False
        seg.nbytes += len(line)
        seg.lines += 1
        seg.last_seq = msg.seq
        self.last_seq = max(self.last_seq, msg.seq)
        self.unread += 1
        return True

    def _rotate(self, first_seq: int) -> _Segment:
        self._close_writer()
        path = self.dir / f"{_PREFIX}{first_seq:020d}{_SUFFIX}"
        if path.exists():
            raise PublishError(f"spool segment {path} already exists; is another publisher using {self.dir}?")
        self._writer = path.open("ab")
        seg = self._wseg = _Segment(path, first_seq, first_seq - 1, 0)
        # Segments stay sorted by first seq; an older batch (written at close) goes before newer ones.
        pos = len(self._segments)
        while pos > 0 and self._segments[pos - 1].first_seq > first_seq:
            pos -= 1
        self._segments.insert(pos, seg)
        if self.fsync != "never":
            _fsync_dir(self.dir)
        return seg

    def write_batch_before(self, messages: list[Message]) -> int:
        """Persist messages that are OLDER than everything already spooled (unacknowledged
        in-memory backlog at close). Returns how many were written."""
        if not messages:
            return 0
        self._close_writer()
        written = 0
        for msg in messages:
            if self.append(msg):
                written += 1
            else:
                break
        self._close_writer()
        return written

    def _close_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.flush()
                if self.fsync != "never":
                    os.fsync(self._writer.fileno())
            finally:
                self._writer.close()
                self._writer = None
                self._wseg = None

    # -- reading -------------------------------------------------------------------------
    def read_next(self) -> Message | None:
        """Next message after the read cursor (not yet committed), or None when drained."""
        r = self._reader
        while True:
            if r.seg is None:
                if not self._segments:
                    return None
                r.seg, r.offset = self._segments[0], 0
            seg = r.seg
            if r.fh is None:
                r.fh = seg.path.open("rb")
                r.fh.seek(r.offset)
            line = r.fh.readline()
            if line:
                r.offset += len(line)
                msg = self._decode(line, seg.path)
                if msg is None:
                    self.corrupt += 1
                    log.warning("spool %s: skipped a corrupt line at byte %d", seg.path, r.offset - len(line))
                    continue
                if msg.seq <= self.committed:
                    continue
                self.unread = max(0, self.unread - 1)
                return msg
            if seg is self._wseg:
                return None  # at the live end of the segment being written
            idx = self._segments.index(seg) if seg in self._segments else -1
            if idx + 1 >= len(self._segments) or idx < 0:
                return None
            r.fh.close()
            r.fh, r.seg, r.offset = None, self._segments[idx + 1], 0

    def commit(self, seq: int, force: bool = False) -> None:
        """Mark everything up to `seq` delivered; delete fully delivered segments."""
        if seq > self.committed:
            self.committed = seq
        while self._segments and self._segments[0].last_seq <= self.committed:
            seg = self._segments[0]
            if seg is self._wseg:
                if self.unread:
                    break
                self._close_writer()
            if self._reader.seg is seg:
                if self._reader.fh is not None:
                    self._reader.fh.close()
                self._reader.seg, self._reader.fh, self._reader.offset = None, None, 0
            self._segments.pop(0)
            seg.path.unlink(missing_ok=True)
        now = time.monotonic()
        if force or (self.committed != self._committed_on_disk and now - self._last_commit_write >= _COMMIT_EVERY_S):
            self._write_committed()
            self._last_commit_write = now

    def _write_committed(self) -> None:
        if self.committed == self._committed_on_disk:
            return
        tmp = self.dir / f"{_COMMITTED}.tmp"
        with tmp.open("w", encoding="ascii") as fh:
            fh.write(f"{self.committed}\n")
            fh.flush()
            if self.fsync != "never":
                os.fsync(fh.fileno())
        os.replace(tmp, self.dir / _COMMITTED)
        self._committed_on_disk = self.committed

    def sync(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            if self.fsync != "never":
                os.fsync(self._writer.fileno())
        self._write_committed()

    def close(self) -> None:
        self._close_writer()
        if self._reader.fh is not None:
            self._reader.fh.close()
            self._reader.fh = None
        self._write_committed()
        if self._lock_fh is not None:
            self._lock_fh.close()  # releases the flock
            self._lock_fh = None


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
