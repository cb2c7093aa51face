"""The Publisher seam."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Protocol, runtime_checkable


@runtime_checkable
class Publisher(Protocol):
    """Delivers verdicts. `publish` must not block the caller for long (a slow or absent
    broker never stalls the pipeline) and must not lose a verdict: what cannot be sent now
    is queued in memory and spooled to disk, and sent in order later."""

    uri: str

    def publish(self, verdict: Mapping[str, Any]) -> None: ...

    def publish_many(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        """Publish several verdicts in order; a durable publisher stores them in one commit
        (group commit). Returns once all are accepted, as publish() does for one. Publishers
        without it are served one by one by `publish_many()` below."""

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything published so far is delivered (True) or timeout (False)."""

    def close(self) -> None: ...

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Publish the station's latest status fields (edge_runtime/status.py): retained on
        MQTT, latest wins, never queued behind verdicts. File and stdout publishers keep
        their stream verdict-only and ignore it (the run summary carries the same figures)."""

    def stats(self) -> Mapping[str, int]: ...


def publish_many(publisher: Any, verdicts: list[Mapping[str, Any]]) -> None:
    """Hand `verdicts` to `publisher` in order: its own publish_many (one durable commit for
    the batch) when it has one, else one publish() each."""
    method = getattr(publisher, "publish_many", None)
    if callable(method):
        method(verdicts)
        return
    for v in verdicts:
        publisher.publish(v)
