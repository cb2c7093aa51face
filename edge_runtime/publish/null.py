"""`null://`: accepts and forgets verdicts, for end-to-end figures without any publishing
cost (the default of `clipinspect bench`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_runtime.errors import PublishError
from edge_runtime.publish.base import PublisherBase

__all__ = ["NullPublisher"]


class NullPublisher(PublisherBase):
    """Counts verdicts and keeps none.

    Args:
        uri: the URI it was opened with.
    """

    scheme = "null"

    def __init__(self, uri: str = "null://") -> None:
        super().__init__(uri)

    @classmethod
    def from_uri(cls, uri: str, options: Any = None) -> NullPublisher:
        """Open `null://` (nothing may follow the scheme).

        Args:
            uri: the publisher URI.
            options: unused.

        Returns:
            The publisher.

        Raises:
            PublishError: something follows `null://`.
        """
        if uri.split("://", 1)[1]:
            raise PublishError(f"publisher URI {uri!r}: null:// takes nothing after the scheme")
        return cls(uri)

    @property
    def count(self) -> int:
        """Verdicts accepted so far."""
        return self._published

    def _publish_batch(self, items: list[Mapping[str, Any]]) -> None:
        self._published += len(items)
