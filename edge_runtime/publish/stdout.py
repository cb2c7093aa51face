"""`stdout://`: one verdict JSON per line on standard output (for pipes and demos)."""

from __future__ import annotations

import sys
import threading
from typing import Any, Iterable, Mapping, TextIO

from edge_runtime.publish.jsonl import encode_line


class StdoutPublisher:
    def __init__(self, uri: str = "stdout://", stream: TextIO | None = None) -> None:
        self.uri = uri
        self._stream = stream
        self._lock = threading.Lock()
        self._count = 0

    @property
    def stream(self) -> TextIO:
        # Looked up late so pytest's capture (and redirections) see the output.
        return self._stream if self._stream is not None else sys.stdout

    def publish(self, verdict: Mapping[str, Any]) -> None:
        line = encode_line(verdict)
        with self._lock:
            self.stream.write(line + "\n")
            self._count += 1

    def publish_many(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        lines = [encode_line(v) + "\n" for v in verdicts]
        with self._lock:
            self.stream.write("".join(lines))
            self._count += len(lines)

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Status is MQTT's retained topic; this stream stays verdict-only."""

    def flush(self, timeout_s: float = 10.0) -> bool:
        with self._lock:
            self.stream.flush()
        return True

    def close(self) -> None:
        self.flush()

    def stats(self) -> dict[str, int]:
        return {"published": self._count, "acked": self._count, "dropped": 0}
