"""`jsonl://path/file.jsonl`: one verdict JSON per line, appended. Each publish/publish_many
call hands its lines to the OS before it returns (so a process crash loses nothing already
counted); flush() and close() also fsync (power cut).

Threads: publish_many runs under the base's publish lock; flush() (any thread) takes
`_io_lock` too, so a write and an fsync never interleave on the file handle.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from edge_runtime.errors import PublishError
from edge_runtime.publish.base import PublisherBase

__all__ = ["JsonlPublisher", "encode_line"]


def encode_line(verdict: Mapping[str, Any]) -> str:
    """One verdict as a compact JSON line (no NaN: JSON readers reject it).

    Args:
        verdict: the verdict record.

    Returns:
        The JSON text, without the newline.

    Raises:
        PublishError: the verdict holds NaN/Inf or something JSON cannot encode.
    """
    try:
        return json.dumps(verdict, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"verdict cannot be encoded as JSON: {exc}") from None


def _sync_and_close(fh: IO[str], lock: threading.Lock) -> None:
    with lock:
        if not fh.closed:
            try:
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fh.close()


class JsonlPublisher(PublisherBase):
    """Appends one verdict JSON per line to a file.

    Args:
        uri: the URI it was opened with.
        path: the file (its folder is created).

    Raises:
        PublishError: the file cannot be opened for appending.
    """

    scheme = "jsonl"

    def __init__(self, uri: str, path: str | Path) -> None:
        super().__init__(uri)
        self.path = Path(path)
        self._io_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise PublishError(f"cannot open {self.path} for appending: {exc.strerror or exc}") from None
        self._release_on_gc(_sync_and_close, self._fh, self._io_lock)

    @classmethod
    def from_uri(cls, uri: str, options: Any = None) -> JsonlPublisher:
        """Open `jsonl://FILE` (relative) or `jsonl:///abs/FILE`.

        Args:
            uri: the publisher URI.
            options: unused (publish options tune MQTT only).

        Returns:
            The open publisher.

        Raises:
            PublishError: no file given, or it cannot be opened.
        """
        rest = uri.split("://", 1)[1]
        if not rest or rest.endswith("/"):
            raise PublishError(f"publisher URI {uri!r}: give a file, e.g. jsonl://verdicts.jsonl")
        return cls(uri, unquote(rest))

    def _publish_batch(self, items: list[Mapping[str, Any]]) -> None:
        lines = "".join(encode_line(v) + "\n" for v in items)  # all or nothing
        with self._io_lock:
            self._fh.write(lines)
            self._fh.flush()
        self._published += len(items)

    def _flush(self, timeout_s: float) -> bool:
        with self._io_lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
        return True

    def _close(self) -> bool:
        return True  # the finalizer (run by close) flushes, fsyncs and closes the file
