"""`stdout://`: one verdict JSON per line on standard output (for pipes and demos)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from edge_runtime.publish.base import PublisherBase
from edge_runtime.publish.jsonl import encode_line

__all__ = ["StdoutPublisher"]


class StdoutPublisher(PublisherBase):
    """Writes one verdict JSON per line to standard output (or `stream`); opened from
    `stdout://` (or `stdout://-`) by the base's `from_uri`.

    Args:
        uri: the URI it was opened with.
        stream: where to write; None means `sys.stdout`, looked up at each write.
    """

    scheme = "stdout"
    bare_targets = ("", "-")  # `stdout://-` as well, for the shell's habit

    def __init__(self, uri: str = "stdout://", stream: TextIO | None = None) -> None:
        super().__init__(uri)
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        """The stream written to (late lookup: pytest's capture and redirections see it)."""
        return self._stream if self._stream is not None else sys.stdout

    def _publish_batch(self, items: list[Mapping[str, Any]]) -> None:
        self.stream.write("".join(encode_line(v) + "\n" for v in items))
        self._published += len(items)

    def _flush(self, timeout_s: float) -> bool:
        self.stream.flush()
        return True
