"""`jsonl://path/file.jsonl`: one verdict JSON per line, appended. Each publish/publish_many
call hands its lines to the OS before it returns (so a process crash loses nothing already
counted); flush() and close() also fsync (power cut)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping

from edge_runtime.errors import PublishError


def encode_line(verdict: Mapping[str, Any]) -> str:
    """One verdict as a compact JSON line (no NaN: JSON readers reject it)."""
    try:
        return json.dumps(verdict, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"verdict cannot be encoded as JSON: {exc}") from None


class JsonlPublisher:
    def __init__(self, uri: str, path: str | Path) -> None:
        self.uri = uri
        self.path = Path(path)
        self._lock = threading.Lock()
        self._count = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise PublishError(f"cannot open {self.path} for appending: {exc.strerror or exc}") from None

    def publish(self, verdict: Mapping[str, Any]) -> None:
        line = encode_line(verdict)
        with self._lock:
            if self._fh.closed:
                raise PublishError(f"{self.uri}: publish() after close()")
            self._fh.write(line + "\n")
            self._fh.flush()
            self._count += 1

    def publish_many(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        lines = [encode_line(v) + "\n" for v in verdicts]
        with self._lock:
            if self._fh.closed:
                raise PublishError(f"{self.uri}: publish() after close()")
            self._fh.write("".join(lines))
            self._fh.flush()
            self._count += len(lines)

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Status is MQTT's retained topic; this stream stays verdict-only."""

    def flush(self, timeout_s: float = 10.0) -> bool:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
        return True

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()

    def stats(self) -> dict[str, int]:
        return {"published": self._count, "acked": self._count, "dropped": 0}
