"""`memory://NAME`: a test-only publisher that keeps verdicts in a list per NAME.

It shows what adding a publisher scheme takes: this one file (a PublisherBase subclass with
its own from_uri) plus one table row (see tests/publish/test_new_scheme.py); nothing else in
edge_runtime changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_runtime.errors import PublishError
from edge_runtime.publish.base import PublisherBase
from edge_runtime.publish.jsonl import encode_line

SINKS: dict[str, list[dict[str, Any]]] = {}  # NAME -> verdicts, outliving the publisher


class MemoryPublisher(PublisherBase):
    """Appends each verdict (a JSON round trip, as a subscriber would see it) to SINKS[name]."""

    scheme = "memory"

    def __init__(self, uri: str, name: str) -> None:
        super().__init__(uri)
        self.name = name
        self.statuses: list[dict[str, Any]] = []
        SINKS.setdefault(name, [])

    @classmethod
    def from_uri(cls, uri: str, options: Any = None) -> MemoryPublisher:
        """Open `memory://NAME` (NAME: letters, digits, - and _)."""
        name = uri.split("://", 1)[1]
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise PublishError(f"publisher URI {uri!r}: give a name, e.g. memory://line1")
        return cls(uri, name)

    def _publish_batch(self, items: list[Mapping[str, Any]]) -> None:
        import json

        SINKS[self.name].extend(json.loads(encode_line(v)) for v in items)
        self._published += len(items)

    def _publish_status(self, status: Mapping[str, Any]) -> None:
        self.statuses.append(dict(status))
