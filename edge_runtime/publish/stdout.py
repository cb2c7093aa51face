"""`stdout://`: one verdict JSON per line on standard output (for pipes and demos)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from edge_runtime.errors import PublishError
from edge_runtime.publish.base import PublisherBase
from edge_runtime.publish.jsonl import encode_line

__all__ = ["StdoutPublisher"]


class StdoutPublisher(PublisherBase):
    """Writes one verdict JSON per line to standard output (or `stream`).

    Args:
        uri: the URI it was opened with.
        stream: where to write; None means `sys.stdout`, looked up at each write.
    """

    scheme = "stdout"

    def __init__(self, uri: str = "stdout://", stream: TextIO | None = None) -> None:
        super().__init__(uri)
        self._stream = stream

    @classmethod
    def from_uri(cls, uri: str, options: Any = None) -> StdoutPublisher:
        """Open `stdout://` (nothing may follow the scheme but `-`).

        Args:
            uri: the publisher URI.
            options: unused.

        Returns:
            The publisher.

        Raises:
            PublishError: something follows `stdout://`.
        """
        if uri.split("://", 1)[1] not in ("", "-"):
            raise PublishError(f"publisher URI {uri!r}: stdout:// takes nothing after the scheme")
        return cls(uri)

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
