"""The Publisher seam: the `Publisher` Protocol the pipeline is typed by, and `PublisherBase`,
which owns the life cycle every publisher shares.

Life cycle (PublisherBase):
  built     `cls.from_uri(uri, options)` (the registry in edge_runtime/publish/__init__.py
            finds the class); the publisher is ready to take verdicts when it returns.
  in use    publish()/publish_many() from one pipeline thread; publish_status(), flush()
            and stats() from any thread.
  closed    close() (or leaving a `with` block) once; later calls of close() do nothing,
            publish() raises one-line PublishError, publish_status() is ignored.

What must be released (threads, sockets, sqlite handles, files) is registered once with
`_release_on_gc(fn, *args)`: a `weakref.finalize` that runs at close(), when a forgotten
publisher is garbage collected, or at interpreter exit, whichever comes first, and never
more than once. `fn` must not hold a reference to the publisher (else it is never collected).
Teardown never raises: close() logs what failed and returns.

A subclass fills in:
  from_uri(uri, options)   its URI validation (one-line PublishError) and construction;
                           the default takes nothing after `scheme://` but `bare_targets`
                           and builds `cls(uri)`
  _publish_batch(items)    deliver or store `items` (called with the closed check done and
                           the publish lock held, so calls never interleave)
  _flush(timeout_s)        optional; default: nothing buffered, True
  _publish_status(fields)  optional; default: ignored (only MQTT has a status topic)
  _close()                 optional graceful part of close (drain, goodbye); its bool says
                           whether everything was delivered
  stats()                  counters; the default counts what _publish_batch accepted
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from edge_runtime.errors import PublishError, first_line

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

__all__ = ["Publisher", "PublisherBase", "publish_many", "redact_uri"]


@runtime_checkable
class Publisher(Protocol):
    """Delivers verdicts. `publish` must not block the caller for long (a slow or absent
    broker never stalls the pipeline) and must not lose a verdict: what cannot be sent now
    is queued in memory and spooled to disk, and sent in order later."""

    uri: str

    def publish(self, verdict: Mapping[str, Any]) -> None:
        """Accept one verdict (see `publish_many`)."""

    def publish_many(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        """Publish several verdicts in order; a durable publisher stores them in one commit
        (group commit). Returns once all are accepted, as publish() does for one. Publishers
        without it are served one by one by `publish_many()` below."""

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything published so far is delivered (True) or timeout (False)."""

    def close(self) -> None:
        """Deliver what can be delivered, release everything; idempotent, never raises."""

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Publish the station's latest status fields (edge_runtime/status.py): retained on
        MQTT, latest wins, never queued behind verdicts. File and stdout publishers keep
        their stream verdict-only and ignore it (the run summary carries the same figures)."""

    def stats(self) -> Mapping[str, int]:
        """Counters: at least `published`; MQTT adds acked, dropped, queued, spool figures."""


def publish_many(publisher: Any, verdicts: list[Mapping[str, Any]]) -> None:
    """Hand `verdicts` to `publisher` in order.

    Args:
        publisher: any object with `publish` (and ideally `publish_many`).
        verdicts: the verdicts, oldest first.

    Uses the publisher's own publish_many (one durable commit for the batch) when it has
    one, else one publish() each.
    """
    method = getattr(publisher, "publish_many", None)
    if callable(method):
        method(verdicts)
        return
    for v in verdicts:
        publisher.publish(v)


def redact_uri(uri: str) -> str:
    """`uri` with any password replaced by `***`, for logs and error messages.

    Args:
        uri: a URI that may hold `user:password@`.

    Returns:
        The URI as it may be shown (`scheme://user:***@host/...`).
    """
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    creds, host = rest.split("@", 1) if "@" in rest.split("/", 1)[0] else ("", rest)
    if not creds:
        return uri
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _release_quietly(shown: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        log.error("%s: releasing resources failed: %s", shown, first_line(exc, with_type=True))
        return None


class PublisherBase:
    """The life cycle shared by the publishers (jsonl, stdout, null, mqtt).

    Use as a context manager or call close(); see the module docstring for the hooks a
    subclass fills in.

    Args:
        uri: the URI it was opened with (shown redacted in messages).

    Attributes:
        uri: the URI as given.
        scheme: the registry row's name (class attribute).
    """

    scheme: ClassVar[str] = ""
    # What may follow `scheme://` for the default from_uri (publishers with no target).
    bare_targets: ClassVar[tuple[str, ...]] = ("",)

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._publish_lock = threading.Lock()  # one batch at a time keeps call order
        self._closed = False
        self._delivered_at_close = True
        self._published = 0
        self._finalizer: weakref.finalize | None = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_uri(cls, uri: str, options: Any = None) -> Self:
        """Validate `uri` and open the publisher.

        This default serves publishers that take no target and no options (`null://`,
        `stdout://`): only `bare_targets` may follow the scheme, and the publisher is built
        as `cls(uri)`. Publishers with a target or options override it.

        Args:
            uri: `scheme://...` as the user wrote it.
            options: the `publish:` options (edge_runtime.publish.options.PublishOptions).

        Returns:
            The open publisher.

        Raises:
            PublishError: one line naming what is wrong with the URI or the set-up.
        """
        if uri.split("://", 1)[1] not in cls.bare_targets:
            raise PublishError(f"publisher URI {uri!r}: {cls.scheme}:// takes nothing after the scheme")
        return cls(uri)

    @property
    def shown_uri(self) -> str:
        """The URI without its password, for logs and messages."""
        return redact_uri(self.uri)

    def _release_on_gc(self, fn: Callable[..., Any], *args: Any) -> None:
        """Register the hard release (stop threads, close sockets/files/sqlite): runs once, at
        close(), at garbage collection or at exit. `fn` and `args` must not refer to self."""
        self._finalizer = weakref.finalize(self, _release_quietly, self.shown_uri, fn, *args)

    # -- the pipeline side ------------------------------------------------------------------
    def publish(self, verdict: Mapping[str, Any]) -> None:
        """Accept one verdict.

        Args:
            verdict: a verdict record (edge_runtime/verdict.py).

        Raises:
            PublishError: after close(), or when the verdict cannot be encoded as JSON.
        """
        self.publish_many([verdict])

    def publish_many(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        """Accept several verdicts in order, in one batch (one commit where durable).

        Args:
            verdicts: the verdicts, oldest first.

        Raises:
            PublishError: after close(), or when a verdict cannot be encoded as JSON (the
                ones before it may be accepted; see the subclass).
        """
        items = list(verdicts)
        with self._publish_lock:
            if self._closed:
                raise PublishError(f"{self.shown_uri}: publish() after close()")
            self._publish_batch(items)

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Publish the station's latest status fields (ignored after close()).

        Args:
            status: fields for the retained status record (edge_runtime/status.py).
        """
        if not self._closed:
            self._publish_status(status)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything published so far is delivered.

        Args:
            timeout_s: the longest wait, in seconds.

        Returns:
            True when all is delivered; False on timeout. After close(): whether close()
            delivered everything.
        """
        if self._closed:
            return self._delivered_at_close
        return self._flush(timeout_s)

    def close(self) -> None:
        """Deliver what can be delivered in the publisher's close budget, then release its
        threads, sockets and files. Idempotent; never raises (failures are logged)."""
        with self._publish_lock:
            if self._closed:
                return
            self._closed = True
            self._delivered_at_close = False  # until _close() says otherwise
        try:
            self._delivered_at_close = bool(self._close())
        except Exception as exc:
            self._delivered_at_close = False
            log.error("%s: close failed: %s", self.shown_uri, first_line(exc, with_type=True))
        finally:
            if self._finalizer is not None:
                self._finalizer()

    @property
    def closed(self) -> bool:
        """True once close() has begun."""
        return self._closed

    def stats(self) -> dict[str, int]:
        """Counters: `published`, `acked` (the same: handed over is delivered), `dropped`."""
        return {"published": self._published, "acked": self._published, "dropped": 0}

    def __enter__(self) -> PublisherBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.shown_uri!r}{', closed' if self._closed else ''})"

    # -- hooks ------------------------------------------------------------------------------
    def _publish_batch(self, items: list[Mapping[str, Any]]) -> None:
        raise NotImplementedError(f"{type(self).__name__}._publish_batch")

    def _publish_status(self, status: Mapping[str, Any]) -> None:
        """Status is MQTT's retained topic; other streams stay verdict-only."""

    def _flush(self, timeout_s: float) -> bool:
        return True

    def _close(self) -> bool:
        return self._flush(10.0)
