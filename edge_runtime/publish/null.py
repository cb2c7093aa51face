"""`null://`: accepts and forgets verdicts, for end-to-end figures without any publishing
cost (the default of `clipinspect bench`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_runtime.publish.base import PublisherBase

__all__ = ["NullPublisher"]


class NullPublisher(PublisherBase):
    """Counts verdicts and keeps none; opened from `null://` by the base's `from_uri`.

    Args:
        uri: the URI it was opened with.
    """

    scheme = "null"

    def __init__(self, uri: str = "null://") -> None:
        super().__init__(uri)

    @property
    def count(self) -> int:
        """Verdicts accepted so far."""
        return self._published

    def _publish_batch(self, items: list[Mapping[str, Any]]) -> None:
        self._published += len(items)
