"""The Publisher seam."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable


@runtime_checkable
class Publisher(Protocol):
    """Delivers verdicts. `publish` must not block the caller for long (a slow or absent
    broker never stalls the pipeline) and must not lose a verdict: what cannot be sent now
    is queued in memory and spooled to disk, and sent in order later."""

    uri: str

    def publish(self, verdict: Mapping[str, Any]) -> None: ...

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything published so far is delivered (True) or timeout (False)."""

    def close(self) -> None: ...

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Publish the station's latest status fields (edge_runtime/status.py): retained on
        MQTT, latest wins, never queued behind verdicts. File and stdout publishers keep
        their stream verdict-only and ignore it (the run summary carries the same figures)."""

    def stats(self) -> Mapping[str, int]: ...
